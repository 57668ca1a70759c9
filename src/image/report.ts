/**
 * Human-readable output of `embers image ls|inspect|rm|gc` (with --json the CLI prints the
 * returned objects instead). Pure functions: objects in, text out.
 */
import type { GcResult, ImageInspect, ImageListEntry, RemoveResult } from './types.js';

const MiB = 1024 * 1024;

function size(bytes: number | undefined): string {
  if (bytes === undefined) return '-';
  if (bytes >= 1024 * MiB) return `${(bytes / 1024 / MiB).toFixed(1)} GiB`;
  if (bytes >= MiB) return `${(bytes / MiB).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

function short(digest: string | undefined): string {
  return digest ? digest.replace(/^sha256:/, '').slice(0, 12) : '-';
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [headers, ...rows]
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '))
    .join('\n');
}

/** `embers image ls`: REFERENCE  SOURCE  MANIFEST  ROOTFS  LAYERS  UPDATED, one row per entry. */
export function formatImageList(entries: ImageListEntry[]): string {
  if (entries.length === 0) return 'no images (pull one with `embers image pull REF`)';
  return table(
    ['REFERENCE', 'SOURCE', 'MANIFEST', 'ROOTFS', 'LAYERS', 'UPDATED'],
    entries.map((e) => [
      e.reference,
      e.source,
      short(e.manifestDigest),
      e.rootfsSha256 ? short(e.rootfsSha256) : 'not built',
      size(e.layersBytes),
      e.updatedAt?.replace(/\.\d+Z$/, 'Z') ?? '-',
    ]),
  );
}

/** `embers image inspect`: key: value lines, then the layers and the run configuration. */
export function formatImageInspect(info: ImageInspect): string {
  const lines = [
    `reference:       ${info.reference} (${info.source})`,
    `manifest:        ${info.manifestDigest}`,
    ...(info.indexDigest ? [`index:           ${info.indexDigest}`] : []),
    `platform:        ${info.platform}`,
    `rootfs:          ${info.rootfsPath ?? 'not built (run `embers image pull` or start the function)'}`,
    ...(info.rootfsSha256
      ? [
          `rootfs sha256:   ${info.rootfsSha256}`,
          `rootfs size:     ${size(info.rootfsSizeBytes)} (sparse), flattener v${info.flattenerVersion}`,
        ]
      : []),
    `entrypoint:      ${JSON.stringify(info.config.entrypoint)}`,
    `cmd:             ${JSON.stringify(info.config.cmd)}`,
    `env:             ${info.config.env.join(' ') || '-'}`,
    `working dir:     ${info.config.workingDir || '/'}`,
    `user:            ${info.config.user || 'root'}`,
    `exposed ports:   ${info.config.exposedPorts.join(' ') || '-'}`,
    `layers:          ${info.layers.length}, ${size(info.layers.reduce((s, l) => s + l.size, 0))}`,
    ...info.layers.map(
      (l, i) => `  ${String(i + 1).padStart(2)}. ${l.digest}  ${size(l.size).padStart(9)}  ${l.mediaType}`,
    ),
  ];
  return lines.join('\n');
}

/** `embers image rm`: what was untagged and which rootfs were deleted. */
export function formatRemoveResult(r: RemoveResult): string {
  const lines = [...r.references.map((ref) => `untagged ${ref}`), ...r.rootfs.map((d) => `deleted rootfs of ${d}`)];
  return lines.length ? lines.join('\n') : 'nothing to remove';
}

/** `embers image gc`: one summary line, then what was removed. */
export function formatGcResult(r: GcResult): string {
  const lines = [
    `removed ${r.removedBlobs.length} blob(s) and ${r.removedRootfs.length} rootfs, freed ${size(r.freedBytes)}; kept ${r.keptBlobs} blob(s) and ${r.keptRootfs} rootfs`,
    ...r.removedRootfs.map((x) => `  rootfs ${x.manifestDigest} (v${x.flattenerVersion}, ${size(x.diskBytes)})`),
    ...r.removedBlobs.map((b) => `  blob   ${b.digest} (${size(b.size)})`),
    ...(r.removedPartialBytes > 0 ? [`  ${size(r.removedPartialBytes)} of interrupted downloads`] : []),
  ];
  return lines.join('\n');
}
