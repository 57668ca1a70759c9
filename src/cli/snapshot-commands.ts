/** embers snapshot create|restore|record-ws|ls|inspect|rm|push|pull. */
import { EmbersError } from '../errors.js';
import { environment, parseDurationMs } from '../config.js';
import { EmbersNode } from '../node/node.js';
import type { SnapshotSource } from '../node/remote.js';
import { mib } from '../util/format.js';
import { fileEntry, SNAPSHOT_FILES } from '../snapshot/manifest.js';
import { intOption, parse } from './args.js';
import { COMMANDS } from './commands.js';
import { nodeOptions, prefetchMode } from './node-options.js';
import type { Output } from './output.js';
import { transferProgress } from './progress.js';

export async function snapshotCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, COMMANDS.snapshot.options);
  const [sub, arg] = positionals;
  const peerSource = (): SnapshotSource | undefined => {
    const url = values['from-peer'];
    if (!url) return undefined;
    const token = values.token ?? environment().daemon.peerToken;
    if (!token)
      throw EmbersError.of('EMB_USAGE', {
        option: '--from-peer',
        problem: 'needs the peer token: --token or EMBERS_PEER_TOKEN',
      });
    return { kind: 'peer', url, token };
  };
  const need = (what: string) => {
    if (!arg) throw EmbersError.of('EMB_USAGE', { usage: `embers snapshot ${sub} <${what}>` });
    return arg;
  };
  const node = await EmbersNode.open(nodeOptions(values, out));
  const snaps = node.snapshots;
  switch (sub) {
    case 'create': {
      const diff = values['disk-diff'] ?? 'block';
      if (diff !== 'block' && diff !== 'rsync')
        throw EmbersError.of('EMB_USAGE', { option: '--disk-diff', value: diff, expected: 'block or rsync' });
      const r = await snaps.create(need('instance'), {
        diskDiff: diff,
        stop: values.stop,
        onTransferProgress: transferProgress(),
      });
      const mem = fileEntry(r.manifest, SNAPSHOT_FILES.memory)?.sizeBytes ?? 0;
      out.result(
        `${r.manifest.id}\tcreated in ${r.timings.createMs} ms (VM paused ${r.timings.pausedMs} ms), memory ${mem} bytes, disk changes ${r.manifest.disk.changedBytes} bytes (${diff})`,
        {
          id: r.manifest.id,
          timings: r.timings,
          memoryBytes: mem,
          deltaBytes: r.manifest.disk.changedBytes,
          manifest: r.manifest,
        },
      );
      return 0;
    }
    case 'restore': {
      const r = await snaps.restore(need('snapshot'), {
        count: intOption(values.count, 'count', 1),
        names: values.name,
        allowUnverifiedDisk: values['allow-unverified-disk'],
        allowHostMismatch: values['allow-host-mismatch'],
        source: peerSource(),
        onTransferProgress: transferProgress(),
        readyTimeoutMs: values['ready-timeout']
          ? parseDurationMs(values['ready-timeout'], '--ready-timeout')
          : undefined,
        prefetch: prefetchMode(values.prefetch),
      });
      const clones = r.clones.map((c) => ({
        name: c.record.name,
        cloneIp: c.record.cloneIp,
        port: c.record.function.port,
        readyMs: c.record.timings.readyMs,
        phases: c.record.timings.phases,
        diskVerified: c.diskVerified,
      }));
      out.result(
        [
          `prepared in ${r.prepareMs} ms${r.fetch ? ` (downloaded ${mib(r.fetch.bytes)} in ${r.fetch.ms} ms)` : ''}${
            r.prefetched ? `, working set of ${mib(r.prefetched.bytes)} prefetched` : ''
          }`,
          ...clones.map(
            (c) =>
              `${c.name}\t${c.cloneIp}:${c.port}\tready in ${c.readyMs} ms\tdisk ${c.diskVerified ? 'verified' : 'NOT verified'}`,
          ),
        ].join('\n'),
        {
          id: r.manifest.id,
          prepareMs: r.prepareMs,
          fetch: r.fetch,
          prefetched: r.prefetched,
          hostWarnings: r.hostWarnings,
          clones,
        },
      );
      await node.settle(); // the slot pool refills in the background, off the restore path
      return 0;
    }
    case 'record-ws': {
      const r = await snaps.recordWorkingSet(need('snapshot'), {
        request: values.path ? { path: values.path } : undefined,
        source: peerSource(),
        readyTimeoutMs: values['ready-timeout']
          ? parseDurationMs(values['ready-timeout'], '--ready-timeout')
          : undefined,
      });
      const bytes = r.manifest.pages * r.manifest.pageSize;
      const share = r.memoryBytes > 0 ? ((100 * bytes) / r.memoryBytes).toFixed(1) : '0';
      out.result(
        `${r.recorded ? 'recorded' : 'already had'} the working set of ${arg}: ${r.manifest.pages} pages, ${mib(bytes)} of ${mib(r.memoryBytes)} memory (${share}%), ${r.manifest.order} order${r.recorded ? `, in ${r.ms} ms` : ''}`,
        {
          id: arg,
          recorded: r.recorded,
          pages: r.manifest.pages,
          bytes,
          memoryBytes: r.memoryBytes,
          status: r.status,
          ms: r.ms,
          workingSet: r.manifest,
        },
      );
      await node.settle();
      return 0;
    }
    case 'push': {
      const r = await snaps.push(need('snapshot'), { onProgress: transferProgress() });
      out.result(
        `pushed ${r.id}: ${mib(r.bytes)} sent, ${mib(r.resumedBytes)} already there, in ${Math.round(r.ms)} ms`,
        r,
      );
      return 0;
    }
    case 'pull': {
      const id = need('snapshot');
      const { fetched } = await snaps.pull(id, peerSource(), { onProgress: transferProgress() });
      out.result(
        fetched
          ? `pulled ${id}: ${mib(fetched.bytes)} in ${Math.round(fetched.ms)} ms, verified`
          : `${id} is already here`,
        {
          id,
          fetched,
        },
      );
      return 0;
    }
    case 'ls': {
      if (values.remote) {
        const { location, ids } = await snaps.listRemote();
        out.result(ids.join('\n'), { remote: location, snapshots: ids });
        return 0;
      }
      const list = await snaps.list();
      out.result(
        [
          'ID\tCREATED\tIMAGE\tDISK',
          ...list.map((m) => `${m.id}\t${m.createdAt}\t${m.image.reference}\t${m.disk.diff}`),
        ].join('\n'),
        {
          snapshots: list.map((m) => ({
            id: m.id,
            createdAt: m.createdAt,
            image: m.image.reference,
            diskDiff: m.disk.diff,
            vmm: m.vmm,
          })),
        },
      );
      return 0;
    }
    case 'inspect': {
      const m = await snaps.inspect(need('snapshot'), { verify: values.verify });
      const ws = await snaps.workingSet(m.id, { verify: values.verify });
      out.result(
        JSON.stringify(m, null, 2) +
          (ws ? `\nworking set:\n${JSON.stringify(ws, null, 2)}` : '\nworking set: none') +
          (values.verify ? '\nverified: every file matches its size and sha256' : ''),
        {
          manifest: m,
          workingSet: ws ?? null,
          verified: values.verify,
        },
      );
      return 0;
    }
    case 'rm': {
      await snaps.remove(need('snapshot'));
      out.result(`removed ${arg}`, { removed: arg });
      return 0;
    }
    default:
      throw EmbersError.of('EMB_USAGE', { usage: 'embers snapshot create|restore|record-ws|ls|inspect|rm|push|pull' });
  }
}
