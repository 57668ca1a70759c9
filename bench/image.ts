/**
 * `npm run bench -- image [--size-mib 64] [--layers 4] [--runs 3] [--json]`
 *
 * Pull + flatten of a multi-layer image from a real registry (Debian's docker-registry on
 * loopback, started for the run; the image pushed with skopeo), measured side by side:
 *   cold pull     an empty node: manifest, config and layers over HTTP, digests checked
 *   cold flatten  the rootfs built from the pulled blobs (offline)
 *   local flatten the same image flattened from its local OCI layout (the same code path)
 *   warm ensure   the rootfs already cached: no network, no build
 *   warm pull     `image pull` again: the manifest is asked for, every blob is cached
 * Layers are half incompressible noise, half text, gzip-compressed.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeOciLayout, type FixtureLayer } from '../src/examples/oci-layout.js';
import { ImageStore } from '../src/image/store.js';
import { registrySkipReason, startRegistry } from '../test/helpers/registry.js';
import { noise } from '../test/helpers/registry-fixtures.js';
import { fmt, median, optionValue, printTable } from './table.js';

const MiB = 1024 * 1024;

function textBlock(size: number, seed: number): Buffer {
  const line = (i: number) =>
    `${seed}:${i} the quick brown fox jumps over the lazy dog ${(i * 2654435761) % 1000003}\n`;
  const parts: string[] = [];
  let n = 0;
  for (let i = 0; n < size; i++) {
    const l = line(i);
    parts.push(l);
    n += l.length;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; s: number }> {
  const t0 = performance.now();
  const value = await fn();
  return { value, s: (performance.now() - t0) / 1000 };
}

export async function benchImage(args: string[]): Promise<Record<string, unknown>> {
  const cannotRun = registrySkipReason();
  if (cannotRun) throw new Error(`the image bench ${cannotRun}`);
  const sizeMiB = optionValue(args, 'size-mib', 64);
  const layerCount = Math.round(optionValue(args, 'layers', 4));
  const runs = Math.round(optionValue(args, 'runs', 3));
  const base = await mkdtemp(join(tmpdir(), 'embers-bench-image-'));
  const registry = await startRegistry();
  try {
    const per = Math.floor((sizeMiB * MiB) / layerCount);
    const layers: FixtureLayer[] = Array.from({ length: layerCount }, (_, i) => ({
      entries: [
        { path: `data/${i}/noise.bin`, type: 'file' as const, content: noise(Math.floor(per / 2), i) },
        { path: `data/${i}/text.txt`, type: 'file' as const, content: textBlock(per - Math.floor(per / 2), i) },
        ...(i > 0 ? [{ type: 'whiteout' as const, path: `data/${i - 1}/text.txt` }] : []),
      ],
    }));
    process.stderr.write(
      `image bench: writing a ${layerCount}-layer image of ${sizeMiB} MiB and pushing it to ${registry.host}…\n`,
    );
    const layout = join(base, 'layout');
    const written = await writeOciLayout(layout, { layers, config: { Cmd: ['/bin/true'] } }, { refName: 'v1' });
    await registry.pushLayout(layout, 'v1', 'bench/image:v1');
    let compressed = 0;
    for (const d of written.layerDigests) compressed += (await stat(join(layout, 'blobs', 'sha256', d.slice(7)))).size;
    const uncompressed = sizeMiB * MiB;
    const ref = `${registry.host}/bench/image:v1`;

    const rows = {
      coldPull: [] as number[],
      coldFlatten: [] as number[],
      localFlatten: [] as number[],
      warmEnsure: [] as number[],
      warmPull: [] as number[],
    };
    let rootfsSha256 = '';
    for (let run = 0; run < runs; run++) {
      const dir = join(base, `node-${run}`);
      const store = new ImageStore(join(dir, 'images'), join(dir, 'tmp'), { authFile: join(dir, 'none.json') });
      rows.coldPull.push((await timed(() => store.pull(ref, { flatten: false }))).s);
      const flat = await timed(() => store.ensure(ref));
      rows.coldFlatten.push(flat.s);
      rootfsSha256 = flat.value.rootfsSha256;
      rows.warmEnsure.push((await timed(() => store.ensure(ref))).s);
      rows.warmPull.push((await timed(() => store.pull(ref))).s);
      const localDir = join(base, `local-${run}`);
      const local = await timed(() => new ImageStore(join(localDir, 'images'), join(localDir, 'tmp')).ensure(layout));
      rows.localFlatten.push(local.s);
      if (local.value.rootfsSha256 !== rootfsSha256)
        throw new Error('the pulled and the local rootfs differ: determinism is broken');
      await rm(dir, { recursive: true, force: true });
      await rm(localDir, { recursive: true, force: true });
    }
    const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)])) as Record<
      keyof typeof rows,
      number
    >;
    const coldTotal = m.coldPull + m.coldFlatten;
    const mbps = (bytes: number, s: number) => bytes / 1e6 / s;
    process.stdout.write(
      `\nimage: ${layerCount} layers, ${fmt(uncompressed / MiB)} MiB uncompressed, ${fmt(compressed / MiB)} MiB gzip; median of ${runs} run(s)\n`,
    );
    printTable(
      ['phase', 'seconds', 'MB/s', 'x warm ensure'],
      [
        ['cold pull (download + verify)', m.coldPull, mbps(compressed, m.coldPull), m.coldPull / m.warmEnsure],
        ['cold flatten (from blobs)', m.coldFlatten, mbps(uncompressed, m.coldFlatten), m.coldFlatten / m.warmEnsure],
        ['cold total', coldTotal, mbps(uncompressed, coldTotal), coldTotal / m.warmEnsure],
        [
          'local flatten (OCI layout)',
          m.localFlatten,
          mbps(uncompressed, m.localFlatten),
          m.localFlatten / m.warmEnsure,
        ],
        ['warm ensure (cached)', m.warmEnsure, '-', 1],
        ['warm pull (manifest only)', m.warmPull, '-', m.warmPull / m.warmEnsure],
      ],
    );
    process.stdout.write(
      `cold total / local flatten: ${fmt(coldTotal / m.localFlatten)}x; rootfs sha256 ${rootfsSha256.slice(0, 16)}… (pulled = local)\n`,
    );
    return {
      bench: 'image',
      layers: layerCount,
      uncompressedBytes: uncompressed,
      compressedBytes: compressed,
      runs,
      coldPullS: m.coldPull,
      coldFlattenS: m.coldFlatten,
      coldTotalS: coldTotal,
      localFlattenS: m.localFlatten,
      warmEnsureS: m.warmEnsure,
      warmPullS: m.warmPull,
      downloadMBps: mbps(compressed, m.coldPull),
      flattenMBps: mbps(uncompressed, m.coldFlatten),
      coldOverWarm: coldTotal / m.warmEnsure,
      coldOverLocal: coldTotal / m.localFlatten,
      rootfsSha256,
    };
  } finally {
    await registry.stop();
    await rm(base, { recursive: true, force: true });
  }
}
