import { EmbersError } from '../errors.js';
import { parseDurationMs } from '../config.js';
import { EmbersNode, type NodeOptions } from '../node/node.js';
import { intOption, parse } from './args.js';
import { Output } from './output.js';
import { runDemo } from './demo.js';

const USAGE = `embers — serverless functions as microVMs, with snapshot restores

usage: embers <command> [options]

  run <image> [--name N] [--vcpus 1] [--memory 256] [--port 8080] [--env K=V]... [--ready-timeout 60s]
                          boot a function microVM from an image and wait until it answers
  invoke <instance> [--path /] [--data TEXT] [--method GET]
                          one HTTP request to the function
  ps                      list instances
  logs <instance>         the guest console
  stop <instance> | --all stop instances and release what they hold
  down                    stop everything and tear down this node's network pool
  guest build             build (or find cached) the guest kernel and initramfs
  guest build-kernel      build a kernel from Debian's linux-source with Firecracker's guest config
  demo [--clones N]       boot the test function, call it and show the timings
  doctor                  what this host has: accelerator, hypervisors, tools

global options:
  --home DIR              the node's data directory (EMBERS_HOME, default /var/lib/embers)
  --accel auto|kvm|tcg    accelerator (default auto: KVM only when hardware-backed)
  --net-pool-size N       free network slots kept ready (default 10)
  --json                  print one JSON object as the last line
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const json = rest.includes('--json');
  const out = new Output(json);
  try {
    if (!command || command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(USAGE);
      return command ? 0 : 64;
    }
    return await dispatch(command, rest, out);
  } catch (err) {
    return out.fail(err);
  }
}

function nodeOptions(values: Record<string, unknown>, out: Output): NodeOptions {
  const accel = values.accel as string | undefined;
  if (accel !== undefined && !['auto', 'kvm', 'tcg'].includes(accel)) throw new EmbersError('EMB_USAGE', `--accel must be auto, kvm or tcg, not "${accel}"`);
  return {
    home: values.home as string | undefined,
    accel: accel as NodeOptions['accel'],
    netPoolSize: intOption(values['net-pool-size'] as string | undefined, 'net-pool-size', 10, 0),
    onProgress: (m) => out.progress(m),
  };
}

async function dispatch(command: string, argv: string[], out: Output): Promise<number> {
  switch (command) {
    case 'run': {
      const { values, positionals } = parse(argv, {
        name: { type: 'string' },
        vcpus: { type: 'string' },
        memory: { type: 'string' },
        port: { type: 'string' },
        env: { type: 'string', multiple: true },
        'ready-timeout': { type: 'string' },
      });
      if (positionals.length !== 1) throw new EmbersError('EMB_USAGE', 'usage: embers run <image> [options]');
      const node = await EmbersNode.open(nodeOptions(values, out));
      const rec = await node.run(
        {
          image: positionals[0],
          vcpus: intOption(values.vcpus, 'vcpus', 1),
          memoryMiB: intOption(values.memory, 'memory', 256, 64),
          port: intOption(values.port, 'port', 8080),
          env: values.env ?? [],
        },
        { name: values.name, readyTimeoutMs: values['ready-timeout'] ? parseDurationMs(values['ready-timeout'], '--ready-timeout') : undefined },
      );
      out.result(
        `${rec.name}\t${rec.cloneIp}:${rec.function.port}\tready in ${rec.timings.readyMs} ms (${Object.entries(rec.timings.phases)
          .map(([k, v]) => `${k.replace(/Ms$/, '')} ${v}`)
          .join(', ')})\taccelerator ${rec.vm.accelerator}`,
        { name: rec.name, cloneIp: rec.cloneIp, port: rec.function.port, accelerator: rec.vm.accelerator, timings: rec.timings },
      );
      return 0;
    }
    case 'invoke': {
      const { values, positionals } = parse(argv, { path: { type: 'string' }, data: { type: 'string' }, method: { type: 'string' } });
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
    case 'stop': {
      const { values, positionals } = parse(argv, { all: { type: 'boolean', default: false } });
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
      const stopped = await node.stopAll();
      await node.pool.teardown();
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
    case 'demo': {
      const { values } = parse(argv, { clones: { type: 'string' } });
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

process.exitCode = await main(process.argv.slice(2));
