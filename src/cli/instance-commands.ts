/** The one-shot commands on instances and the node: run, invoke, ps, logs, exec, stop, down, guest, doctor. */
import { EmbersError } from '../errors.js';
import { parseDurationMs } from '../config.js';
import { EmbersNode, type FunctionSpec } from '../node/node.js';
import { validateFunctionSpec } from '../node/function-spec.js';
import { validateInstanceName } from '../node/instances.js';
import { exitCodeOf } from '../guest/agent-protocol.js';
import { intOption, parse } from './args.js';
import { COMMANDS } from './commands.js';
import { nodeOptions } from './node-options.js';
import type { Output } from './output.js';

/** embers run: boots a function microVM from an image and waits until it answers. */
export async function runCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, COMMANDS.run.options);
  if (positionals.length !== 1) throw EmbersError.of('EMB_USAGE', { usage: 'embers run <image> [options]' });
  const fn: FunctionSpec = {
    image: positionals[0],
    vcpus: intOption(values.vcpus, 'vcpus', 1),
    memoryMiB: intOption(values.memory, 'memory', 256, 64),
    port: intOption(values.port, 'port', 8080, 1, 65535),
    env: values.env ?? [],
  };
  if (values['restore-hook'] !== undefined) {
    fn.restoreHook = { path: values['restore-hook'] };
    if (values['restore-hook-timeout'] !== undefined)
      fn.restoreHook.timeoutMs = parseDurationMs(values['restore-hook-timeout'], '--restore-hook-timeout');
  } else if (values['restore-hook-timeout'] !== undefined) {
    throw EmbersError.of('EMB_USAGE', { option: '--restore-hook-timeout', problem: 'needs --restore-hook' });
  }
  const readyTimeoutMs = values['ready-timeout']
    ? parseDurationMs(values['ready-timeout'], '--ready-timeout')
    : undefined;
  if (values.name !== undefined) validateInstanceName(values.name);
  validateFunctionSpec(fn); // before the node takes anything (node.run checks again)
  const node = await EmbersNode.open(nodeOptions(values, out));
  const rec = await node.run(fn, { name: values.name, readyTimeoutMs });
  out.result(
    `${rec.name}\t${rec.cloneIp}:${rec.function.port}\tready in ${rec.timings.readyMs} ms (${Object.entries(
      rec.timings.phases,
    )
      .map(([k, v]) => `${k.replace(/Ms$/, '')} ${v}`)
      .join(', ')})\taccelerator ${rec.vm.accelerator}`,
    {
      name: rec.name,
      cloneIp: rec.cloneIp,
      port: rec.function.port,
      accelerator: rec.vm.accelerator,
      timings: rec.timings,
    },
  );
  await node.settle(); // the slot pool refills in the background, off the start path
  return 0;
}

/** embers invoke: one HTTP request to an instance. */
export async function invokeCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, COMMANDS.invoke.options);
  if (positionals.length !== 1)
    throw EmbersError.of('EMB_USAGE', { usage: 'embers invoke <instance> [--path /] [--data TEXT]' });
  const node = await EmbersNode.open(nodeOptions(values, out));
  const res = await node.invoke(positionals[0], { path: values.path, data: values.data, method: values.method });
  out.result(res.body.replace(/\n$/, ''), { status: res.status, body: res.body, latencyMs: res.latencyMs });
  return res.status >= 200 && res.status < 400 ? 0 : 1;
}

/** embers ps: the instances. */
export async function psCommand(argv: string[], out: Output): Promise<number> {
  const { values } = parse(argv, {});
  const node = await EmbersNode.open(nodeOptions(values, out));
  const list = await node.list();
  const lines = [
    'NAME\tSTATUS\tADDRESS\tORIGIN\tIMAGE',
    ...list.map((i) => `${i.name}\t${i.status}\t${i.cloneIp}:${i.port}\t${i.origin}\t${i.image}`),
  ];
  out.result(lines.join('\n'), { instances: list });
  return 0;
}

/** embers logs: an instance's guest console. */
export async function logsCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, {});
  if (positionals.length !== 1) throw EmbersError.of('EMB_USAGE', { usage: 'embers logs <instance>' });
  const node = await EmbersNode.open(nodeOptions(values, out));
  const text = await node.logs(positionals[0]);
  out.result(text.replace(/\n$/, ''), { name: positionals[0], console: text });
  return 0;
}

/** embers exec: runs a command in an instance through the guest agent, streaming its output. */
export async function execCommand(argv: string[], out: Output): Promise<number> {
  const dd = argv.indexOf('--');
  const { values, positionals } = parse(dd < 0 ? argv : argv.slice(0, dd), COMMANDS.exec.options);
  const command = dd < 0 ? positionals.slice(1) : [...positionals.slice(1), ...argv.slice(dd + 1)];
  if (positionals.length < 1 || command.length === 0)
    throw EmbersError.of('EMB_USAGE', { usage: 'embers exec <instance> [options] -- <command> [args]...' });
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
    out.result('', {
      ...status,
      exitCode,
      stdout: Buffer.concat(captured.stdout).toString(),
      stderr: Buffer.concat(captured.stderr).toString(),
    });
  } else if (status.state === 'timeout') {
    out.progress(`embers exec: the command did not finish in ${values.timeout ?? '60s'}: killed`);
  } else if (status.state === 'not-started') {
    out.progress(`embers exec: the command could not start (errno ${status.code})`);
  }
  return exitCode;
}

/** embers stop: stops instances and releases what they hold. */
export async function stopCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, COMMANDS.stop.options);
  if (!values.all && positionals.length === 0)
    throw EmbersError.of('EMB_USAGE', { usage: 'embers stop <instance>... | --all' });
  const node = await EmbersNode.open(nodeOptions(values, out));
  const stopped = values.all ? await node.stopAll() : [];
  for (const name of positionals) {
    await node.stop(name);
    stopped.push(name);
  }
  out.result(stopped.map((n) => `stopped ${n}`).join('\n'), { stopped });
  return 0;
}

/** embers down: stops everything and tears down the network pool. */
export async function downCommand(argv: string[], out: Output): Promise<number> {
  const { values } = parse(argv, {});
  const node = await EmbersNode.open(nodeOptions(values, out));
  const stopped = await node.down();
  out.result(`stopped ${stopped.length} instance(s), network pool torn down`, { stopped });
  return 0;
}

/** embers guest build | build-kernel: the guest kit. */
export async function guestCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, {});
  const sub = positionals[0];
  if (sub !== 'build' && sub !== 'build-kernel')
    throw EmbersError.of('EMB_USAGE', { usage: 'embers guest build | build-kernel' });
  const node = await EmbersNode.open(nodeOptions(values, out));
  const kit = sub === 'build' ? await node.guestKit() : await node.guestKit('firecracker-config');
  out.result(`kernel ${kit.kernelPath}\ninitrd ${kit.initrdPath}\nversion ${kit.kernelVersion} (${kit.kind})`, kit);
  return 0;
}

/** embers doctor: what this host has. */
export async function doctorCommand(argv: string[], out: Output): Promise<number> {
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
