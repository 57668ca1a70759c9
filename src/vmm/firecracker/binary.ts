/**
 * The Firecracker binary a driver runs: found once (a path, or a name looked up on PATH) and
 * its versions read once (`--version`, `--snapshot-version`). A failed look-up is not cached,
 * so a binary installed later is found.
 */
import { access, constants } from 'node:fs/promises';
import { EmbersError } from '../../errors.js';
import { which } from '../../util/exec.js';
import { binarySnapshotVersion, binaryVersion } from './version.js';

/** The absolute path of an executable Firecracker: `binary` as a path, or looked up on PATH. */
export async function findFirecracker(binary: string): Promise<string | undefined> {
  const candidate = binary.includes('/') ? binary : await which(binary);
  if (!candidate) return undefined;
  return access(candidate, constants.X_OK).then(
    () => candidate,
    () => undefined,
  );
}

export class FirecrackerBinary {
  private path: Promise<string> | undefined;
  private versions: Promise<{ binary: string; snapshot: string }> | undefined;

  /** `binary`: the configured path or name. */
  constructor(private readonly binary: string) {}

  /** The binary's absolute path; EMB_VMM_NOT_FOUND if there is none. */
  resolve(): Promise<string> {
    this.path ??= findFirecracker(this.binary).then((found) => {
      if (!found) {
        throw EmbersError.of(
          'EMB_VMM_NOT_FOUND',
          { problem: 'binary', vmm: 'Firecracker', binary: this.binary },
          {
            hint: 'download a release from https://github.com/firecracker-microvm/firecracker/releases and pass its path (--firecracker-bin or EMBERS_FIRECRACKER_BIN)',
          },
        );
      }
      return found;
    });
    this.path.catch(() => (this.path = undefined));
    return this.path;
  }

  /** The binary's version ("1.16.1") and the snapshot data format it writes and loads ("8.0.0"). */
  readVersions(): Promise<{ binary: string; snapshot: string }> {
    this.versions ??= (async () => {
      const bin = await this.resolve();
      return { binary: await binaryVersion(bin), snapshot: await binarySnapshotVersion(bin) };
    })();
    this.versions.catch(() => (this.versions = undefined));
    return this.versions;
  }
}
