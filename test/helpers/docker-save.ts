/**
 * Test fixtures beside src/examples/oci-layout.ts: `docker save` archives (legacy and
 * Docker >= 25 OCI style) and the path of a layout's blob.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  Blobs,
  buildImage,
  FIXTURE_MTIME,
  layoutFiles,
  sha256,
  written,
  type FixtureImage,
  type WrittenImage,
} from '../../src/examples/oci-layout.js';
import { writeTar, type TarWriteEntry } from '../../src/examples/tar-writer.js';

/** Path of a blob of a layout directory. */
export function blobPath(dir: string, digest: string): string {
  return join(dir, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
}

export interface DockerSaveOptions {
  /** e.g. ['example/app:latest']. */
  repoTags?: string[];
  /** 'legacy' (<id>/layer.tar + <config hex>.json, as Docker < 25) or 'oci' (Docker >= 25: an OCI layout plus manifest.json). */
  style?: 'legacy' | 'oci';
}

/**
 * Writes a `docker save`-style archive. In 'legacy' style the manifest digest embers computes
 * is synthetic (docker save keeps no manifest), so `manifestDigest` here is the OCI one only
 * for style 'oci'.
 */
export async function writeDockerSave(
  file: string,
  image: FixtureImage,
  opts: DockerSaveOptions = {},
): Promise<WrittenImage> {
  const repoTags = opts.repoTags ?? ['embers-fixture:latest'];
  const entries: TarWriteEntry[] = [];
  const dirs = new Set<string>();
  const addFile = (name: string, data: Buffer) => {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ path: d, type: 'dir', mode: 0o755, mtime: FIXTURE_MTIME });
      }
    }
    entries.push({ path: name, type: 'file', mode: 0o644, content: data, mtime: FIXTURE_MTIME });
  };
  let result: WrittenImage;
  if ((opts.style ?? 'legacy') === 'oci') {
    const { blobs, main, index } = layoutFiles(
      { ...image, mediaTypes: image.mediaTypes ?? 'oci' },
      { refName: repoTags[0] },
    );
    addFile('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
    addFile('index.json', index);
    for (const [name, data] of [...blobs.files].sort(([a], [b]) => (a < b ? -1 : 1))) addFile(name, data);
    addFile(
      'manifest.json',
      Buffer.from(
        JSON.stringify([
          {
            Config: main.configName,
            RepoTags: repoTags,
            Layers: main.layerDigests.map((d) => `blobs/sha256/${d.slice(7)}`),
          },
        ]),
      ),
    );
    result = written(main);
  } else {
    const blobs = new Blobs();
    const main = buildImage(blobs, {
      ...image,
      layers: image.layers.map((l) => ({ ...l, compression: 'none' as const })),
      mediaTypes: 'docker',
    });
    const config = blobs.files.get(main.configName)!;
    const configName = `${main.configDigest.slice(7)}.json`;
    addFile(configName, config);
    const layerNames: string[] = [];
    main.layerTars.forEach((tar, i) => {
      const id = sha256(`${main.diffIds.slice(0, i + 1).join(' ')}`);
      addFile(`${id}/VERSION`, Buffer.from('1.0'));
      addFile(`${id}/layer.tar`, tar);
      layerNames.push(`${id}/layer.tar`);
    });
    addFile(
      'manifest.json',
      Buffer.from(JSON.stringify([{ Config: configName, RepoTags: repoTags, Layers: layerNames }])),
    );
    result = written(main);
  }
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, writeTar(entries));
  return result;
}
