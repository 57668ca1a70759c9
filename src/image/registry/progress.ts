/**
 * Progress of a pull, as structured events (for the HTTP API) and as a display for the CLI.
 *
 * Events, in order: one `resolved` (the manifest and its layers, which are already cached),
 * `layer` events as bytes arrive (at most about one per MiB per layer, plus one when a layer
 * starts and one when it is verified and stored), `step` events while the rootfs is built,
 * and one `done`.
 */

export interface PullLayerInfo {
  digest: string;
  size: number;
  /** Already in the blob store: not downloaded. */
  cached: boolean;
}

export type PullEvent =
  | {
      type: 'resolved';
      reference: string;
      manifestDigest: string;
      /** The index the reference named, when it named one (the manifest is its linux/amd64 entry). */
      indexDigest?: string;
      platform: string;
      layers: PullLayerInfo[];
      /** Bytes of all layers (compressed, as stored). */
      bytesTotal: number;
      /** Bytes of the layers already cached. */
      bytesCached: number;
    }
  | {
      type: 'layer';
      reference: string;
      /** 0-based position in the manifest; `count` layers in all. */
      index: number;
      count: number;
      digest: string;
      /** 'cached' (nothing to fetch), 'downloading' (bytes arriving), 'done' (verified and stored). */
      status: 'cached' | 'downloading' | 'done';
      /** Bytes of this layer on disk, resumed bytes included. */
      bytesDone: number;
      bytesTotal: number;
      /** Bytes this layer's download resumed from (an interrupted earlier pull), else 0. */
      resumedFrom: number;
      /** Over all layers of the image. */
      imageBytesDone: number;
      imageBytesTotal: number;
    }
  | { type: 'step'; reference: string; message: string }
  | {
      type: 'done';
      reference: string;
      manifestDigest: string;
      /** Present when the pull also built (or found) the rootfs. */
      rootfsSha256?: string;
      /** Bytes received from the registry by this pull. */
      bytesDownloaded: number;
      ms: number;
    };

export type PullProgressListener = (event: PullEvent) => void;

const MiB = 1024 * 1024;

function mib(n: number): string {
  return `${(n / MiB).toFixed(1)} MiB`;
}

function short(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

/** One line of text for an event, or undefined for the byte-by-byte `downloading` ones. */
export function describePullEvent(e: PullEvent): string | undefined {
  switch (e.type) {
    case 'resolved':
      return `${e.reference}: manifest ${e.manifestDigest} (${e.platform}), ${e.layers.length} layers, ${mib(e.bytesTotal)}${e.bytesCached > 0 ? ` (${mib(e.bytesCached)} cached)` : ''}`;
    case 'layer':
      if (e.status === 'cached')
        return `layer ${e.index + 1}/${e.count} ${short(e.digest)}: cached (${mib(e.bytesTotal)})`;
      if (e.status === 'done')
        return `layer ${e.index + 1}/${e.count} ${short(e.digest)}: downloaded ${mib(e.bytesTotal)}${e.resumedFrom > 0 ? ` (resumed at ${mib(e.resumedFrom)})` : ''}`;
      return undefined;
    case 'step':
      return e.message;
    case 'done':
      return `${e.reference}: ${e.manifestDigest}${e.rootfsSha256 ? `, rootfs sha256 ${e.rootfsSha256}` : ''} (${mib(e.bytesDownloaded)} downloaded in ${(e.ms / 1000).toFixed(1)} s)`;
  }
}

export interface ProgressDisplayOptions {
  /** Redraw one status line per layer in place (a terminal) instead of printing a line per step.
   * @default Boolean(out.isTTY) */
  tty?: boolean;
}

/**
 * The CLI's display of a pull: on a terminal, one line per layer redrawn in place
 * (`layer 2/5 3f1c…  12.0/40.0 MiB  30%`) under the resolved line; elsewhere, one line per
 * event that `describePullEvent` describes. Returns the listener to pass as `onProgress`.
 */
export function pullProgressDisplay(
  out: NodeJS.WritableStream & { isTTY?: boolean },
  opts: ProgressDisplayOptions = {},
): PullProgressListener {
  const tty = opts.tty ?? Boolean(out.isTTY);
  if (!tty) {
    return (e) => {
      const line = describePullEvent(e);
      if (line !== undefined) out.write(`${line}\n`);
    };
  }
  let lines: string[] = [];
  let drawn = 0;
  const redraw = () => {
    let text = drawn > 0 ? `\x1b[${drawn}A` : '';
    for (const l of lines) text += `\r\x1b[2K${l}\n`;
    drawn = lines.length;
    out.write(text);
  };
  return (e) => {
    if (e.type === 'resolved') {
      out.write(`${describePullEvent(e)}\n`);
      lines = e.layers.map(
        (l, i) => `layer ${i + 1}/${e.layers.length} ${short(l.digest)}  ${l.cached ? 'cached' : 'waiting'}`,
      );
      drawn = 0;
      redraw();
    } else if (e.type === 'layer') {
      const pct = e.bytesTotal > 0 ? Math.floor((e.bytesDone / e.bytesTotal) * 100) : 100;
      const state =
        e.status === 'cached'
          ? 'cached'
          : e.status === 'done'
            ? `done ${mib(e.bytesTotal)}`
            : `${mib(e.bytesDone)}/${mib(e.bytesTotal)}  ${pct}%`;
      lines[e.index] =
        `layer ${e.index + 1}/${e.count} ${short(e.digest)}  ${state}${e.resumedFrom > 0 ? ` (resumed at ${mib(e.resumedFrom)})` : ''}`;
      redraw();
    } else {
      lines = [];
      drawn = 0;
      out.write(`${describePullEvent(e)}\n`);
    }
  };
}
