import { parseDurationMs } from '../config.js';
import { DEFAULT_API_PORT, startDaemon } from '../api/daemon.js';
import { intOption, parse } from './args.js';
import { COMMANDS } from './commands.js';
import { nodeOptions, onOff } from './node-options.js';
import type { Output } from './output.js';

/**
 * The node daemon: functions, the lifecycle, the HTTP API, metrics and the peer endpoints,
 * until SIGTERM/SIGINT (then it drains and releases everything).
 */
export async function serveCommand(argv: string[], out: Output): Promise<number> {
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
