import { EmbersError } from '../errors.js';
import { environment, parseCgroupSettings, parseDurationMs, s3Settings } from '../config.js';
import { EmbersNode, type FunctionSpec, type NodeOptions } from '../node/node.js';
import { validateFunctionSpec } from '../node/function-spec.js';
import { validateInstanceName } from '../node/instances.js';
import { intOption, parse } from './args.js';
import { COMMANDS, commandHelp, hoistGlobalOptions, isCommand } from './commands.js';
import { Output } from './output.js';
import { exitCodeOf } from '../guest/agent-protocol.js';
import { runDemo } from './demo.js';
import { transferProgress } from './progress.js';
import { formatGcResult, formatImageInspect, formatImageList, formatRemoveResult, pullProgressDisplay } from '../image/index.js';
import type { SnapshotSource } from '../node/remote.js';
import type { PrefetchMode } from '../node/snapshots.js';
import { DEFAULT_API_PORT, startDaemon } from '../api/daemon.js';
import { fnCommand } from './fn.js';
import { mib } from '../util/format.js';
import { MAX_SLOTS } from '../net/addressing.js';
import { fileEntry, SNAPSHOT_FILES } from '../snapshot/manifest.js';

const USAGE = `embers — serverless functions as microVMs, with snapshot restores

usage: embers [global options] <command> [options]     (embers <command> --help explains one)

  run <image> [--name N] [--vcpus 1] [--memory 256] [--port 8080] [--env K=V]... [--ready-timeout 60s]
                          boot a function microVM from an image and wait until it answers
  invoke <instance> [--path /] [--data TEXT] [--method GET]
                          one HTTP request to the function
  ps                      list instances
  logs <instance>         the guest console
  stop <instance> | --all stop instances and release what they hold
  down                    stop everything and tear down this node's network pool
  snapshot create <instance> [--disk-diff block|rsync] [--stop]
                          pause, snapshot (state, memory, disk delta), resume (or stop)
  snapshot restore <id> [--count N] [--name N]... [--from-peer URL] [--allow-host-mismatch]
                          restore N clones concurrently; each answers before this returns;
                          refused on a host whose CPU, VMM major version or guest kernel
                          differs from the snapshot's, unless --allow-host-mismatch
  snapshot record-ws <id> [--path PATH]
                          record its working set (REAP, QEMU): the pages a restored clone
                          reads to answer its first request; restores then prefetch them
                          (snapshot restore --prefetch auto|on|off, default auto)
  snapshot ls [--remote] | inspect <id> [--verify] | rm <id>
  snapshot push <id>      upload a snapshot to the S3-compatible store
  snapshot pull <id> [--from-peer URL]
                          download a snapshot from the store (or a peer node), verified
  serve [--listen 127.0.0.1] [--port 7070] [--peer URL]... [--drain-timeout 30s]
                          the node daemon: functions with automatic snapshots, the HTTP
                          API (/openapi.json), /metrics, and this node's snapshots for peers
                          (API token: EMBERS_API_TOKEN, required off loopback; peer token:
                          EMBERS_PEER_TOKEN or --peer-token); cold starts also restore
                          snapshots the --peer nodes made
  fn deploy <name> <image> [--memory 256] … | ls | inspect <name> | rm <name> | invoke <name> [--path /] [--data TEXT]
                          clients of the daemon (EMBERS_API, default http://127.0.0.1:7070);
                          see: embers fn --help
  image pull <ref>        pull from a registry (or read a local OCI layout / docker save
                          archive), verify every blob, flatten to a deterministic rootfs
  image ls | inspect <ref> | rm <ref> | gc
  guest build             build (or find cached) the guest kernel and initramfs
  guest build-kernel      build a kernel from Debian's linux-source with Firecracker's guest config
  demo [--clones N]       boot the test function, call it and show the timings
  doctor                  what this host has: accelerator, hypervisors, tools

global options (before or after the command):
  --home DIR              the node's data directory (EMBERS_HOME, default /var/lib/embers)
  --accel auto|kvm|tcg    accelerator (default auto: KVM only when hardware-backed)
  --vmm auto|qemu|firecracker
                          hypervisor (default auto: Firecracker where its binary and
                          hardware KVM exist, else QEMU); see: embers doctor
  --firecracker-bin PATH  the Firecracker binary (EMBERS_FIRECRACKER_BIN)
  --fc-jailer-uid N [--fc-jailer-gid N] [--fc-jailer-bin PATH] [--fc-chroot-base DIR]
  [--fc-cgroup KEY=VALUE]... [--fc-parent-cgroup NAME]
                          run Firecracker through the jailer as uid/gid N (EMBERS_FC_JAILER_*;
                          default: no jailer, a private mount namespace per VM; chroot base
                          /srv/jailer, gid = uid)
  --fc-vsock-cid N        a vsock device with guest CID N in every VM (EMBERS_FC_VSOCK_CID;
                          default 3: the guest agent is reached over it)
  --fc-diff-snapshots     track dirty pages for Diff snapshots (EMBERS_FC_DIFF_SNAPSHOTS=1)
  --guest-kernel debian|firecracker-config
                          the guest kernel (default debian; firecracker-config is built
                          by: embers guest build-kernel)
  --net-pool-size N       free network slots kept ready (default 10)
  --qemu-cpu MODEL        the CPU QEMU guests see (default host under KVM, max under TCG);
                          for snapshots that move between KVM hosts, the oldest model all
                          of them have (e.g. Skylake-Client-v4); restores need the same
  --device-discovery acpi|cmdline
                          how QEMU guests find their devices (default acpi; cmdline: no
                          ACPI, no RTC, virtio_mmio.device= on the kernel command line)
  --snapshots disabled|local|remote
                          snapshot mode (default local; remote when EMBERS_S3_* is set):
                          remote uploads after create and downloads before restore
  --cache-snapshots on|off
                          keep downloaded snapshots (default on)
  --s3-endpoint URL --s3-bucket B [--s3-region R] [--s3-prefix P]
                          the S3-compatible store (or EMBERS_S3_*; credentials only from
                          EMBERS_S3_ACCESS_KEY_ID and EMBERS_S3_SECRET_ACCESS_KEY)
  --json                  print one JSON object as the last line
`;

async function main(argv: string[]): Promise<number> {
  const out = new Output(argv.includes('--json'));
  try {
    const { command, args: rest } = hoistGlobalOptions(argv);
    const help = rest.includes('--help') || rest.includes('-h');
    if (!command || command === 'help') {
      const topic = rest.find((a) => !a.startsWith('-'));
      process.stdout.write(topic && isCommand(topic) ? commandHelp(topic) : USAGE);
      return command || help ? 0 : 64;
    }
    if (help && isCommand(command)) {
      process.stdout.write(commandHelp(command));
      return 0;
    }
    return await dispatch(command, rest, out);
  } catch (err) {
    return out.fail(err);
  }
}

function nodeOptions(values: Record<string, unknown>, out: Output): NodeOptions {
  const accel = values.accel as string | undefined;
  if (accel !== undefined && !['auto', 'kvm', 'tcg'].includes(accel)) throw new EmbersError('EMB_USAGE', `--accel must be auto, kvm or tcg, not "${accel}"`);
  const vmm = values.vmm as string | undefined;
  if (vmm !== undefined && !['auto', 'qemu', 'firecracker'].includes(vmm))
    throw new EmbersError('EMB_USAGE', `--vmm must be auto, qemu or firecracker, not "${vmm}"`);
  const guestKernel = values['guest-kernel'] as string | undefined;
  if (guestKernel !== undefined && !['debian', 'firecracker-config'].includes(guestKernel)) {
    throw new EmbersError('EMB_USAGE', `--guest-kernel must be debian or firecracker-config, not "${guestKernel}"`);
  }
  const discovery = values['device-discovery'] as string | undefined;
  if (discovery !== undefined && !['acpi', 'cmdline'].includes(discovery)) {
    throw new EmbersError('EMB_USAGE', `--device-discovery must be acpi or cmdline, not "${discovery}"`);
  }
  const snapshots = values.snapshots as string | undefined;
  if (snapshots !== undefined && !['disabled', 'local', 'remote'].includes(snapshots)) {
    throw new EmbersError('EMB_USAGE', `--snapshots must be disabled, local or remote, not "${snapshots}"`);
  }
  const cache = onOff(values['cache-snapshots'] as string | undefined, '--cache-snapshots');
  return {
    home: values.home as string | undefined,
    snapshots: snapshots as NodeOptions['snapshots'],
    cacheSnapshots: cache,
    s3: s3FromFlags(values),
    accel: accel as NodeOptions['accel'],
    vmm: vmm as NodeOptions['vmm'],
    guestKernel: guestKernel as NodeOptions['guestKernel'],
    qemuCpuModel: values['qemu-cpu'] as string | undefined,
    deviceDiscovery: discovery as NodeOptions['deviceDiscovery'],
    firecrackerBin: values['firecracker-bin'] as string | undefined,
    netPoolSize: intOption(values['net-pool-size'] as string | undefined, 'net-pool-size', 10, 0, MAX_SLOTS),
    firecracker: firecrackerFromFlags(values),
    onProgress: (m) => out.progress(m),
  };
}

/** Firecracker settings from --fc-* flags; what is not given comes from EMBERS_FC_* or the defaults (config.ts). */
function firecrackerFromFlags(values: Record<string, unknown>): NodeOptions['firecracker'] {
  const str = (n: string) => values[`fc-${n}`] as string | undefined;
  const int = (n: string, min: number) => (str(n) === undefined ? undefined : intOption(str(n), `fc-${n}`, 0, min));
  const cgroups = values['fc-cgroup'] as string[] | undefined;
  const jailerFlags = ['jailer-uid', 'jailer-gid', 'jailer-bin', 'chroot-base', 'parent-cgroup'].some((n) => str(n) !== undefined) || cgroups !== undefined;
  let jailer: NonNullable<NodeOptions['firecracker']>['jailer'];
  if (jailerFlags) {
    const envUid = environment().firecracker.jailerUid;
    const uid = int('jailer-uid', 0) ?? (envUid ? Number(envUid) : undefined);
    if (uid === undefined) throw new EmbersError('EMB_USAGE', 'the --fc-jailer-* and --fc-cgroup options need --fc-jailer-uid (or EMBERS_FC_JAILER_UID)');
    jailer = {
      uid,
      gid: int('jailer-gid', 0),
      binary: str('jailer-bin'),
      chrootBaseDir: str('chroot-base'),
      cgroups: cgroups === undefined ? undefined : parseCgroupSettings(cgroups.join(';'), '--fc-cgroup'),
      parentCgroup: str('parent-cgroup'),
    };
  }
  return { jailer, vsockCid: int('vsock-cid', 3), diffSnapshots: values['fc-diff-snapshots'] as boolean | undefined };
}

/** S3 options from --s3-* flags over EMBERS_S3_* (config.ts: s3Settings), or undefined without flags to use EMBERS_S3_*. */
function s3FromFlags(values: Record<string, unknown>): NodeOptions['s3'] {
  const flag = (n: string) => values[`s3-${n}`] as string | undefined;
  const flags = { endpoint: flag('endpoint'), bucket: flag('bucket'), region: flag('region'), prefix: flag('prefix') };
  if (Object.values(flags).every((v) => v === undefined)) return undefined;
  return s3Settings(flags);
}

async function dispatch(command: string, argv: string[], out: Output): Promise<number> {
  switch (command) {
    case 'run': {
      const { values, positionals } = parse(argv, COMMANDS.run.options);
      if (positionals.length !== 1) throw new EmbersError('EMB_USAGE', 'usage: embers run <image> [options]');
      const fn: FunctionSpec = {
        image: positionals[0],
        vcpus: intOption(values.vcpus, 'vcpus', 1),
        memoryMiB: intOption(values.memory, 'memory', 256, 64),
        port: intOption(values.port, 'port', 8080, 1, 65535),
        env: values.env ?? [],
      };
      if (values['restore-hook'] !== undefined) {
        fn.restoreHook = { path: values['restore-hook'] };
        if (values['restore-hook-timeout'] !== undefined) fn.restoreHook.timeoutMs = parseDurationMs(values['restore-hook-timeout'], '--restore-hook-timeout');
      } else if (values['restore-hook-timeout'] !== undefined) {
        throw new EmbersError('EMB_USAGE', '--restore-hook-timeout needs --restore-hook');
      }
      const readyTimeoutMs = values['ready-timeout'] ? parseDurationMs(values['ready-timeout'], '--ready-timeout') : undefined;
      if (values.name !== undefined) validateInstanceName(values.name);
      validateFunctionSpec(fn); // before the node takes anything (node.run checks again)
      const node = await EmbersNode.open(nodeOptions(values, out));
      const rec = await node.run(fn, { name: values.name, readyTimeoutMs });
      out.result(
        `${rec.name}\t${rec.cloneIp}:${rec.function.port}\tready in ${rec.timings.readyMs} ms (${Object.entries(rec.timings.phases)
          .map(([k, v]) => `${k.replace(/Ms$/, '')} ${v}`)
          .join(', ')})\taccelerator ${rec.vm.accelerator}`,
        { name: rec.name, cloneIp: rec.cloneIp, port: rec.function.port, accelerator: rec.vm.accelerator, timings: rec.timings },
      );
      await node.settle(); // the slot pool refills in the background, off the start path
      return 0;
    }
    case 'invoke': {
      const { values, positionals } = parse(argv, COMMANDS.invoke.options);
      if (positionals.length !== 1) throw new EmbersError('EMB_USAGE', 'usage: embers invoke <instance> [--path /] [--data TEXT]');
      const node = await EmbersNode.open(nodeOptions(values, out));
      const res = await node.invoke(positionals[0], { path: values.path, data: values.data, method: values.method });
      out.result(res.body.replace(/\n$/, ''), { status: res.status, body: res.body, latencyMs: res.latencyMs });
      return res.status >= 200 && res.status < 400 ? 0 : 1;
    }
    case 'ps': {
      const { values } = parse(argv, {});
      const node = await EmbersNode.open(nodeOptions(values, out));
      const list = await node.list();
      const lines = ['NAME\tSTATUS\tADDRESS\tORIGIN\tIMAGE', ...list.map((i) => `${i.name}\t${i.status}\t${i.cloneIp}:${i.port}\t${i.origin}\t${i.image}`)];
      out.result(lines.join('\n'), { instances: list });
      return 0;
    }
    case 'logs': {
      const { values, positionals } = parse(argv, {});
      if (positionals.length !== 1) throw new EmbersError('EMB_USAGE', 'usage: embers logs <instance>');
      const node = await EmbersNode.open(nodeOptions(values, out));
      const text = await node.logs(positionals[0]);
      out.result(text.replace(/\n$/, ''), { name: positionals[0], console: text });
      return 0;
    }
    case 'exec': {
      const dd = argv.indexOf('--');
      const { values, positionals } = parse(dd < 0 ? argv : argv.slice(0, dd), COMMANDS.exec.options);
      const command = dd < 0 ? positionals.slice(1) : [...positionals.slice(1), ...argv.slice(dd + 1)];
      if (positionals.length < 1 || command.length === 0) throw new EmbersError('EMB_USAGE', 'usage: embers exec <instance> [options] -- <command> [args]...');
      const timeoutMs = values.timeout === undefined ? 60_000 : parseDurationMs(values.timeout, '--timeout');
      const node = await EmbersNode.open(nodeOptions(values, out));
      const captured = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
      const status = await node.exec(positionals[0], {
        argv: command,
        timeoutMs,
        shell: values.shell,
        kitRoot: values.kit,
        // streamed as it comes; with --json collected into the final object instead
        onStdout: (b) => (out.json ? captured.stdout.push(b) : process.stdout.write(b)),
        onStderr: (b) => (out.json ? captured.stderr.push(b) : process.stderr.write(b)),
      });
      const exitCode = exitCodeOf(status);
      if (out.json) {
        out.result('', { ...status, exitCode, stdout: Buffer.concat(captured.stdout).toString(), stderr: Buffer.concat(captured.stderr).toString() });
      } else if (status.state === 'timeout') {
        out.progress(`embers exec: the command did not finish in ${values.timeout ?? '60s'}: killed`);
      } else if (status.state === 'not-started') {
        out.progress(`embers exec: the command could not start (errno ${status.code})`);
      }
      return exitCode;
    }
    case 'stop': {
      const { values, positionals } = parse(argv, COMMANDS.stop.options);
      if (!values.all && positionals.length === 0) throw new EmbersError('EMB_USAGE', 'usage: embers stop <instance>... | --all');
      const node = await EmbersNode.open(nodeOptions(values, out));
      const stopped = values.all ? await node.stopAll() : [];
      for (const name of positionals) {
        await node.stop(name);
        stopped.push(name);
      }
      out.result(stopped.map((n) => `stopped ${n}`).join('\n'), { stopped });
      return 0;
    }
    case 'down': {
      const { values } = parse(argv, {});
      const node = await EmbersNode.open(nodeOptions(values, out));
      const stopped = await node.down();
      out.result(`stopped ${stopped.length} instance(s), network pool torn down`, { stopped });
      return 0;
    }
    case 'guest': {
      const { values, positionals } = parse(argv, {});
      const sub = positionals[0];
      if (sub !== 'build' && sub !== 'build-kernel') throw new EmbersError('EMB_USAGE', 'usage: embers guest build | build-kernel');
      const node = await EmbersNode.open(nodeOptions(values, out));
      const kit = sub === 'build' ? await node.guestKit() : await node.guestKit('firecracker-config');
      out.result(`kernel ${kit.kernelPath}\ninitrd ${kit.initrdPath}\nversion ${kit.kernelVersion} (${kit.kind})`, kit);
      return 0;
    }
    case 'snapshot':
      return snapshotCommand(argv, out);
    case 'serve':
      return serveCommand(argv, out);
    case 'fn':
      return fnCommand(argv, out);
    case 'image':
      return imageCommand(argv, out);
    case 'demo': {
      const { values } = parse(argv, COMMANDS.demo.options);
      return runDemo(nodeOptions(values, out), out, { clones: intOption(values.clones, 'clones', 3) });
    }
    case 'doctor': {
      const { values } = parse(argv, {});
      const node = await EmbersNode.open(nodeOptions(values, out));
      const report = await node.doctor();
      out.result(
        Object.entries(report)
          .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
          .join('\n'),
        report,
      );
      return 0;
    }
    default:
      throw new EmbersError('EMB_USAGE', `unknown command "${command}"; run \`embers --help\``);
  }
}

async function snapshotCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, COMMANDS.snapshot.options);
  const [sub, arg] = positionals;
  const peerSource = (): SnapshotSource | undefined => {
    const url = values['from-peer'];
    if (!url) return undefined;
    const token = values.token ?? environment().daemon.peerToken;
    if (!token) throw new EmbersError('EMB_USAGE', '--from-peer needs the peer token: --token or EMBERS_PEER_TOKEN');
    return { kind: 'peer', url, token };
  };
  const need = (what: string) => {
    if (!arg) throw new EmbersError('EMB_USAGE', `usage: embers snapshot ${sub} <${what}>`);
    return arg;
  };
  const node = await EmbersNode.open(nodeOptions(values, out));
  const snaps = node.snapshots;
  switch (sub) {
    case 'create': {
      const diff = values['disk-diff'] ?? 'block';
      if (diff !== 'block' && diff !== 'rsync') throw new EmbersError('EMB_USAGE', `--disk-diff must be block or rsync, not "${diff}"`);
      const r = await snaps.create(need('instance'), { diskDiff: diff, stop: values.stop, onTransferProgress: transferProgress() });
      const mem = fileEntry(r.manifest, SNAPSHOT_FILES.memory)?.sizeBytes ?? 0;
      out.result(
        `${r.manifest.id}\tcreated in ${r.timings.createMs} ms (VM paused ${r.timings.pausedMs} ms), memory ${mem} bytes, disk changes ${r.manifest.disk.changedBytes} bytes (${diff})`,
        { id: r.manifest.id, timings: r.timings, memoryBytes: mem, deltaBytes: r.manifest.disk.changedBytes, manifest: r.manifest },
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
        readyTimeoutMs: values['ready-timeout'] ? parseDurationMs(values['ready-timeout'], '--ready-timeout') : undefined,
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
          ...clones.map((c) => `${c.name}\t${c.cloneIp}:${c.port}\tready in ${c.readyMs} ms\tdisk ${c.diskVerified ? 'verified' : 'NOT verified'}`),
        ].join('\n'),
        { id: r.manifest.id, prepareMs: r.prepareMs, fetch: r.fetch, prefetched: r.prefetched, hostWarnings: r.hostWarnings, clones },
      );
      await node.settle(); // the slot pool refills in the background, off the restore path
      return 0;
    }
    case 'record-ws': {
      const r = await snaps.recordWorkingSet(need('snapshot'), {
        request: values.path ? { path: values.path } : undefined,
        source: peerSource(),
        readyTimeoutMs: values['ready-timeout'] ? parseDurationMs(values['ready-timeout'], '--ready-timeout') : undefined,
      });
      const bytes = r.manifest.pages * r.manifest.pageSize;
      const share = r.memoryBytes > 0 ? ((100 * bytes) / r.memoryBytes).toFixed(1) : '0';
      out.result(
        `${r.recorded ? 'recorded' : 'already had'} the working set of ${arg}: ${r.manifest.pages} pages, ${mib(bytes)} of ${mib(r.memoryBytes)} memory (${share}%), ${r.manifest.order} order${r.recorded ? `, in ${r.ms} ms` : ''}`,
        { id: arg, recorded: r.recorded, pages: r.manifest.pages, bytes, memoryBytes: r.memoryBytes, status: r.status, ms: r.ms, workingSet: r.manifest },
      );
      await node.settle();
      return 0;
    }
    case 'push': {
      const r = await snaps.push(need('snapshot'), { onProgress: transferProgress() });
      out.result(`pushed ${r.id}: ${mib(r.bytes)} sent, ${mib(r.resumedBytes)} already there, in ${Math.round(r.ms)} ms`, r);
      return 0;
    }
    case 'pull': {
      const id = need('snapshot');
      const { fetched } = await snaps.pull(id, peerSource(), { onProgress: transferProgress() });
      out.result(fetched ? `pulled ${id}: ${mib(fetched.bytes)} in ${Math.round(fetched.ms)} ms, verified` : `${id} is already here`, {
        id,
        fetched,
      });
      return 0;
    }
    case 'ls': {
      if (values.remote) {
        const { location, ids } = await snaps.listRemote();
        out.result(ids.join('\n'), { remote: location, snapshots: ids });
        return 0;
      }
      const list = await snaps.list();
      out.result(['ID\tCREATED\tIMAGE\tDISK', ...list.map((m) => `${m.id}\t${m.createdAt}\t${m.image.reference}\t${m.disk.diff}`)].join('\n'), {
        snapshots: list.map((m) => ({ id: m.id, createdAt: m.createdAt, image: m.image.reference, diskDiff: m.disk.diff, vmm: m.vmm })),
      });
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
      throw new EmbersError('EMB_USAGE', 'usage: embers snapshot create|restore|record-ws|ls|inspect|rm|push|pull');
  }
}

async function imageCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, {});
  const [sub, ref] = positionals;
  const need = () => {
    if (!ref) throw new EmbersError('EMB_USAGE', `usage: embers image ${sub} <reference>`);
    return ref;
  };
  const node = await EmbersNode.open(nodeOptions(values, out));
  const images = node.images;
  switch (sub) {
    case 'pull': {
      const info = await images.pull(need(), { onProgress: pullProgressDisplay(process.stderr) });
      out.result(formatImageInspect(info), info);
      return 0;
    }
    case 'ls': {
      const list = await images.listImages();
      out.result(formatImageList(list), { images: list });
      return 0;
    }
    case 'inspect': {
      const info = await images.inspect(need());
      out.result(formatImageInspect(info), info);
      return 0;
    }
    case 'rm': {
      const r = await images.remove(need(), { inUse: await node.imageDigestsInUse() });
      out.result(formatRemoveResult(r), r);
      return 0;
    }
    case 'gc': {
      const r = await images.gc(() => node.imageDigestsInUse());
      out.result(formatGcResult(r), r);
      return 0;
    }
    default:
      throw new EmbersError('EMB_USAGE', 'usage: embers image pull|ls|inspect|rm|gc');
  }
}

/** An on|off flag (true|false too); undefined when not given. */
function onOff(value: string | undefined, flag: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (!['true', 'false', 'on', 'off'].includes(value)) throw new EmbersError('EMB_USAGE', `${flag} must be on or off, not "${value}"`);
  return value === 'true' || value === 'on';
}

/**
 * The node daemon: functions, the lifecycle, the HTTP API, metrics and the peer endpoints,
 * until SIGTERM/SIGINT (then it drains and releases everything).
 */
async function serveCommand(argv: string[], out: Output): Promise<number> {
  const { values } = parse(argv, COMMANDS.serve.options);
  const daemon = await startDaemon({
    ...nodeOptions(values, out),
    listen: values.listen,
    port: intOption(values.port, 'port', DEFAULT_API_PORT, 0, 65535),
    peerToken: values['peer-token'] ?? values.token,
    peers: values.peer,
    recordWorkingSets: onOff(values['record-working-sets'], '--record-working-sets'),
    drainMs: values['drain-timeout'] ? parseDurationMs(values['drain-timeout'], '--drain-timeout') : undefined,
    bodyLimit: values['body-limit'] ? intOption(values['body-limit'], 'body-limit', 0, 1024) : undefined,
  });
  out.result(`embers serve: listening on ${daemon.url} (home ${daemon.engine.node.config.home})`, {
    url: daemon.url,
    port: daemon.port,
    home: daemon.engine.node.config.home,
    pid: process.pid,
  });
  await new Promise<void>((resolve) => {
    // a second signal while draining changes nothing: the drain is bounded (--drain-timeout)
    process.on('SIGINT', resolve);
    process.on('SIGTERM', resolve);
  });
  out.progress('embers serve: draining');
  await daemon.close();
  out.progress('embers serve: stopped');
  return 0;
}

process.exitCode = await main(process.argv.slice(2));

function prefetchMode(value: string | undefined): PrefetchMode | undefined {
  if (value === undefined) return undefined;
  if (value !== 'auto' && value !== 'on' && value !== 'off') throw new EmbersError('EMB_USAGE', `--prefetch must be auto, on or off, not "${value}"`);
  return value;
}
