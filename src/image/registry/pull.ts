/**
 * Pulls one image from a registry into the blob store: the manifest (through an index or
 * Docker manifest list to its linux/amd64 entry), the config, then the layers, several at once.
 * Every byte is checked against its digest before it is stored. The index and manifest are
 * stored last. The rootfs is then built from the store by resolve.ts + ImageStore, exactly as
 * from a local OCI layout.
 */
import { readFile } from 'node:fs/promises';
import { EmbersError } from '../../errors.js';
import { retry, type RetryPolicy } from '../../util/retry.js';
import {
  checkDiffIdCount,
  checkIndex,
  checkManifest,
  checkPlatform,
  INDEX_TYPES,
  isObject,
  kindOf,
  layerMediaType,
  MANIFEST_TYPES,
  manifestInvalid,
  parseConfig,
  parseJson,
  pickPlatform,
  type Descriptor,
} from '../manifest.js';
import type { BlobStore } from './blob-store.js';
import type { FetchedManifest, RegistryClient } from './client.js';
import { downloadBlob } from './download.js';
import { isTransientRegistryError } from './http.js';
import type { PullEvent, PullLayerInfo } from './progress.js';
import { formatImageReference, type ImageReference } from './reference.js';
import { crashPoint } from '../../util/crash-point.js';

const MiB = 1024 * 1024;
const MAX_INDEX_DEPTH = 4;

export interface PullOptions {
  retry: RetryPolicy;
  /** Layers downloaded at once. */
  concurrency: number;
  signal?: AbortSignal;
  onEvent?: (e: PullEvent) => void;
}

export interface PullResult {
  /** Canonical reference (`registry/repository:tag`, `…@sha256:…`). */
  reference: string;
  manifestDigest: string;
  indexDigest?: string;
  platform: string;
  configDigest: string;
  layers: Descriptor[];
  /** Bytes received from the registry by this pull (manifests and blobs). */
  bytesDownloaded: number;
  /** Bytes of layers reused from interrupted earlier downloads. */
  bytesResumed: number;
  /** Bytes of the layers already in the blob store. */
  bytesCached: number;
  /** Bytes of all layers. */
  bytesTotal: number;
  /** Range requests sent to resume interrupted layer downloads. */
  rangeRequests: number;
  ms: number;
}

function platformText(p: { os?: unknown; architecture?: unknown; variant?: unknown }): string {
  return `${String(p.os ?? 'linux')}/${String(p.architecture ?? 'amd64')}${typeof p.variant === 'string' && p.variant ? `/${p.variant}` : ''}`;
}

export async function pullImage(
  ref: ImageReference,
  client: RegistryClient,
  store: BlobStore,
  opts: PullOptions,
): Promise<PullResult> {
  const started = Date.now();
  const reference = formatImageReference(ref);
  const emit = opts.onEvent ?? (() => {});
  const withRetry = <T>(fn: () => Promise<T>) => retry(fn, isTransientRegistryError, opts.retry, opts.signal);
  let bytesDownloaded = 0;

  // 1. manifest, through indexes
  const manifests: FetchedManifest[] = [];
  let current = await withRetry(() => client.getManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest'));
  bytesDownloaded += current.bytes.length;
  let indexDigest: string | undefined;
  let indexPlatform: Descriptor['platform'];
  let doc: Record<string, unknown>;
  for (let depth = 0; ; depth++) {
    manifests.push(current);
    const parsed = parseJson(current.bytes, `manifest ${current.digest}`, reference);
    if (!isObject(parsed))
      throw manifestInvalid(`manifest ${current.digest} of ${reference}`, 'is not a JSON object', {
        reference,
        digest: current.digest,
      });
    const mediaType =
      INDEX_TYPES.has(current.mediaType) || MANIFEST_TYPES.has(current.mediaType) ? current.mediaType : undefined;
    const desc: Descriptor = {
      digest: current.digest,
      size: current.bytes.length,
      ...(mediaType ? { mediaType } : {}),
    };
    if (kindOf(parsed, desc) === 'manifest') {
      doc = parsed;
      break;
    }
    if (depth >= MAX_INDEX_DEPTH)
      throw manifestInvalid(`the indexes of ${reference}`, 'nest too deeply', { reference, digest: current.digest });
    if (depth === 0) indexDigest = current.digest;
    const where = `index ${current.digest} of ${reference}`;
    const chosen = pickPlatform(checkIndex(parsed, where), where);
    indexPlatform = chosen.platform;
    const child = await withRetry(() => client.getManifest(ref.repository, chosen.digest));
    bytesDownloaded += child.bytes.length;
    if (child.bytes.length !== chosen.size) {
      throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'manifest-size',
        reference,
        digest: chosen.digest,
        size: child.bytes.length,
        expectedSize: chosen.size,
      });
    }
    current = child;
  }
  const manifestDigest = current.digest;
  const where = `manifest ${manifestDigest} of ${reference}`;
  const { configDesc, layers } = checkManifest(doc, where, { reference, digest: manifestDigest });
  layers.forEach((d, i) => layerMediaType(d, i, reference));

  // 2. config: checked before any layer is fetched (platform, diff_ids)
  let configBytes: Buffer;
  if (await store.has(configDesc.digest, configDesc.size)) {
    configBytes = await readFile(store.path(configDesc.digest));
  } else {
    configBytes = await withRetry(() => client.getBlobBytes(ref.repository, configDesc, 'image config'));
    bytesDownloaded += configBytes.length;
  }
  const configDoc = parseJson(configBytes, `image config ${configDesc.digest}`, reference);
  const cfg = parseConfig(configDoc, configDesc.digest);
  checkPlatform(cfg.os, cfg.architecture, manifestDigest);
  checkDiffIdCount(cfg.diffIds, layers.length, where, { reference, digest: manifestDigest });
  await store.putBytes(configDesc.digest, configBytes);
  const platform = platformText({
    os: cfg.os ?? indexPlatform?.os,
    architecture: cfg.architecture ?? indexPlatform?.architecture,
    variant: (configDoc as { variant?: unknown }).variant ?? indexPlatform?.variant,
  });

  // 3. layers, `concurrency` at once
  const infos: PullLayerInfo[] = [];
  for (const d of layers) infos.push({ digest: d.digest, size: d.size, cached: await store.has(d.digest, d.size) });
  const bytesTotal = layers.reduce((s, d) => s + d.size, 0);
  const bytesCached = infos.filter((l) => l.cached).reduce((s, l) => s + l.size, 0);
  emit({
    type: 'resolved',
    reference,
    manifestDigest,
    ...(indexDigest ? { indexDigest } : {}),
    platform,
    layers: infos,
    bytesTotal,
    bytesCached,
  });

  const perLayer = layers.map((d, i) => (infos[i]!.cached ? d.size : 0));
  const imageDone = () => perLayer.reduce((s, n) => s + n, 0);
  let bytesResumed = 0;
  let rangeRequests = 0;
  const unique = new Map<string, number>(); // digest → first index (a layer may repeat)
  layers.forEach((d, i) => {
    if (!unique.has(d.digest)) unique.set(d.digest, i);
  });
  const queue = [...unique.values()];
  let failure: unknown;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (failure !== undefined) return;
      const i = queue.shift();
      if (i === undefined) return;
      const d = layers[i]!;
      const base = {
        type: 'layer' as const,
        reference,
        index: i,
        count: layers.length,
        digest: d.digest,
        bytesTotal: d.size,
      };
      if (infos[i]!.cached) {
        emit({
          ...base,
          status: 'cached',
          bytesDone: d.size,
          resumedFrom: 0,
          imageBytesDone: imageDone(),
          imageBytesTotal: bytesTotal,
        });
        continue;
      }
      let lastReported = -Infinity;
      try {
        const result = await downloadBlob(client, ref.repository, d, store, {
          retry: opts.retry,
          signal: opts.signal,
          onProgress: (p) => {
            perLayer[i] = p.bytesDone;
            if (p.bytesDone === lastReported || (p.bytesDone - lastReported < MiB && p.bytesDone < p.bytesTotal))
              return;
            lastReported = p.bytesDone;
            emit({
              ...base,
              status: 'downloading',
              bytesDone: p.bytesDone,
              resumedFrom: p.resumedFrom,
              imageBytesDone: imageDone(),
              imageBytesTotal: bytesTotal,
            });
          },
        });
        perLayer[i] = d.size;
        await crashPoint('image.pull.after-layer');
        bytesDownloaded += result.bytesReceived;
        bytesResumed += result.resumedFrom;
        rangeRequests += result.rangeRequests;
        emit({
          ...base,
          status: result.cached ? 'cached' : 'done',
          bytesDone: d.size,
          resumedFrom: result.resumedFrom,
          imageBytesDone: imageDone(),
          imageBytesTotal: bytesTotal,
        });
      } catch (err) {
        if (failure === undefined) failure = err;
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, Math.max(1, queue.length)) }, worker));
  if (failure !== undefined) throw failure;
  // layers that repeat an earlier digest: stored once, reported as cached
  layers.forEach((d, i) => {
    if (unique.get(d.digest) === i) return;
    perLayer[i] = d.size;
    emit({
      type: 'layer',
      reference,
      index: i,
      count: layers.length,
      digest: d.digest,
      bytesTotal: d.size,
      status: 'cached',
      bytesDone: d.size,
      resumedFrom: 0,
      imageBytesDone: imageDone(),
      imageBytesTotal: bytesTotal,
    });
  });

  // 4. the manifest, then the index: stored last, once everything they name is in place
  await crashPoint('image.pull.before-manifest');
  for (const m of [...manifests].reverse()) await store.putBytes(m.digest, m.bytes);

  return {
    reference,
    manifestDigest,
    ...(indexDigest ? { indexDigest } : {}),
    platform,
    configDigest: configDesc.digest,
    layers,
    bytesDownloaded,
    bytesResumed,
    bytesCached,
    bytesTotal,
    rangeRequests,
    ms: Date.now() - started,
  };
}
