/**
 * The page server for Firecracker's `Uffd` memory backend: native/uffd-handler.c (Node
 * cannot receive Firecracker's userfaultfd over SCM_RIGHTS). Built with gcc into the cache,
 * named after the digest of its source (scripts/setup.sh builds it the same way), started
 * BEFORE the snapshot load (Firecracker touches guest memory during the load), and gone
 * with the Firecracker process it serves: it watches the pid that connected (SO_PEERCRED)
 * and exits when that process does, so a restored VM's handler needs no owner of its own
 * once the load was sent.
 *
 * Usage: `const h = await startUffdHandler({...}); driver.restore(spec, files, { memoryBackend:
 * { type: 'Uffd', socketPath: h.socketPath } })`.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../../errors.js';
import { packageRoot } from '../../guest/paths.js';
import { ensureNativeTool, nativeToolPath, type NativeTool } from '../../util/native-tool.js';
import { spawnDetached, terminate, waitForExit, waitForPath } from '../process.js';

/** The handler's C source in the package. */
export function uffdHandlerSource(): string {
  return join(packageRoot(), 'native', 'uffd-handler.c');
}

/** The header it includes (SHA-256 for chunk verification). */
function uffdHandlerHeader(): string {
  return join(packageRoot(), 'native', 'sha256.h');
}

const UFFD_HANDLER = (): NativeTool => ({ name: 'uffd-handler', sources: [uffdHandlerSource(), uffdHandlerHeader()] });

/** Where the handler built from the current sources lives: `<cacheDir>/native/uffd-handler-<sha256(.c then .h)[0:12]>`. */
export function uffdHandlerPath(cacheDir: string): Promise<string> {
  return nativeToolPath(cacheDir, UFFD_HANDLER());
}

/** The handler binary, built with gcc if this source was not built yet (see util/native-tool.ts). */
export function ensureUffdHandler(cacheDir: string): Promise<string> {
  return ensureNativeTool(cacheDir, UFFD_HANDLER());
}

export interface UffdHandlerStats {
  /** Missing-page faults served. */
  faults: number;
  /** Pages copied from the memory file (UFFDIO_COPY). */
  copied: number;
  /** Pages served as zeros (holes in the memory file, removed ranges). */
  zeroed: number;
  /** UFFD_EVENT_REMOVE / UNMAP ranges seen. */
  removed_ranges: number;
  already_mapped: number;
  regions: number;
  /** Why it exited: process-exited (the connected process, or --pid), peer-closed (no pid known), signal, uffd-closed,
   * chunk-corrupt (a chunk failed its sha256: refused), source-gone (the downloader left before every chunk arrived). */
  exit: string;
  mode: UffdHandlerMode;
  /** Pages the prefetcher copied (prefetch mode), and how long it took. */
  prefetched: number;
  prefetch_ms: number;
  /** Distinct pages logged in first-touch order (record mode). */
  recorded: number;
  /** Chunks of an arriving memory file read and verified against their sha256. */
  chunks_verified: number;
  /** Faults that had to wait for their chunk, and chunks asked for with priority. */
  chunk_waits: number;
  wanted: number;
  /** The chunk refused for its digest, or -1. */
  bad_chunk: number;
}

/** lazy: fault by fault; record: also log the first-touch order; prefetch: copy a working set in first, then lazy. */
export type UffdHandlerMode = 'lazy' | 'record' | 'prefetch';

/** A memory file still being downloaded: the handler serves only from chunks it verified itself. */
export interface UffdArrivingMemory {
  /** A file with one sha256 (lowercase hex) per line, chunk i covering [i*chunkSize, (i+1)*chunkSize). */
  chunkListPath: string;
  chunkSize: number;
  /** The Unix socket the downloader connects to ("ready N" in, "want N" / "bad N" out). */
  controlPath: string;
}

export interface UffdHandler {
  pid: number;
  socketPath: string;
  exited: Promise<number | null>;
  /** Waits (at most `timeoutMs`, default 30 s) for the handler to exit (it does when
   * Firecracker does) and returns its counters. */
  stats(timeoutMs?: number): Promise<UffdHandlerStats>;
  /** Waits until the ready file exists: handshake done and, in prefetch mode, the working set copied in. */
  ready(timeoutMs?: number): Promise<void>;
  /** Stops it (SIGTERM, then SIGKILL): for a load that never happened. */
  stop(): Promise<void>;
}

export interface UffdHandlerOptions {
  binary: string;
  /** The socket Firecracker connects to (`mem_backend.backend_path`). */
  socketPath: string;
  /** The snapshot's memory file, served page by page. */
  memoryFile: string;
  /** Where its counters go on exit, and its stderr. */
  statsPath: string;
  logPath: string;
  /** Exit also when this process does (e.g. the Firecracker it serves). */
  pid?: number;
  /** How long to wait for its socket, in ms. @default 5000 */
  startTimeoutMs?: number;
  /** @default 'lazy' */
  mode?: UffdHandlerMode;
  /** record mode: where the working set's ranges file (WS-FORMAT.md) is written on exit. */
  recordPath?: string;
  /** prefetch mode: the working set's ranges, and its pages' bytes (else read from the memory file) with their sha256. */
  workingSet?: { rangesPath: string; pagesPath?: string; pagesSha256?: string };
  /** Created once the handshake is done and, in prefetch mode, the working set is in. */
  readyPath?: string;
  arriving?: UffdArrivingMemory;
}

/** Starts the handler and waits until its socket accepts connections. */
export async function startUffdHandler(o: UffdHandlerOptions): Promise<UffdHandler> {
  await rm(o.socketPath, { force: true });
  await rm(o.statsPath, { force: true });
  const args = ['--socket', o.socketPath, '--mem-file', o.memoryFile, '--stats', o.statsPath];
  if (o.pid) args.push('--pid', String(o.pid));
  if (o.mode) args.push('--mode', o.mode);
  if (o.recordPath) args.push('--record', o.recordPath);
  if (o.workingSet) {
    args.push('--ws-ranges', o.workingSet.rangesPath);
    if (o.workingSet.pagesPath) args.push('--ws-pages', o.workingSet.pagesPath);
    if (o.workingSet.pagesSha256) args.push('--ws-pages-sha256', o.workingSet.pagesSha256);
  }
  if (o.readyPath) {
    await rm(o.readyPath, { force: true });
    args.push('--ready-file', o.readyPath);
  }
  if (o.arriving)
    args.push(
      '--chunks',
      o.arriving.chunkListPath,
      '--control',
      o.arriving.controlPath,
      '--chunk-size',
      String(o.arriving.chunkSize),
    );
  const proc = await spawnDetached(o.binary, args, o.logPath);
  try {
    await waitForPath(
      o.socketPath,
      proc.exited,
      o.startTimeoutMs ?? 5000,
      `uffd-handler for ${o.memoryFile}`,
      o.logPath,
    );
  } catch (err) {
    await terminate(proc.pid, 1000).catch(() => undefined);
    throw err;
  }
  return {
    pid: proc.pid,
    socketPath: o.socketPath,
    exited: proc.exited,
    async stats(timeoutMs = 30_000) {
      // Polled, not awaited on `exited`: the handler is detached and does not hold the event loop.
      if (!(await waitForExit(proc.pid, timeoutMs))) {
        throw EmbersError.of('EMB_VMM_TIMEOUT', {
          problem: 'uffd-exit',
          pid: proc.pid,
          memoryFile: o.memoryFile,
          timeoutMs,
        });
      }
      const text = await readFile(o.statsPath, 'utf8').catch(() => '');
      if (!text) {
        const log = await readFile(o.logPath, 'utf8').catch(() => '');
        throw EmbersError.of('EMB_VMM_COMMAND_FAILED', {
          problem: 'uffd-no-counters',
          memoryFile: o.memoryFile,
          output: log.trim(),
          log: o.logPath,
        });
      }
      return JSON.parse(text) as UffdHandlerStats;
    },
    async ready(timeoutMs = 60_000) {
      if (!o.readyPath) throw EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'uffd-no-ready-file' });
      await waitForPath(o.readyPath, proc.exited, timeoutMs, `uffd-handler for ${o.memoryFile} to be ready`, o.logPath);
    },
    async stop() {
      await terminate(proc.pid, 1000);
      await rm(o.socketPath, { force: true });
    },
  };
}
