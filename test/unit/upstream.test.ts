import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { SpareConnections } from '../../src/node/upstream.js';

/** A loopback server that, like busybox httpd, answers one line per connection and closes; it counts connections. */
async function oneShotServer(): Promise<{ server: Server; port: number; accepted: Socket[] }> {
  const accepted: Socket[] = [];
  const server = createServer((s) => {
    accepted.push(s);
    s.on('error', () => undefined);
    s.once('data', (d) => s.end(`echo ${d.toString()}`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port, accepted };
}

async function roundTrip(socket: Socket, text: string): Promise<string> {
  let out = '';
  socket.on('data', (d: Buffer) => (out += d.toString()));
  socket.write(text);
  await once(socket, 'end');
  socket.destroy();
  return out;
}

async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 5));
}

test('a primed instance hands out a connection opened in advance, and opens the next one at once', async () => {
  const { server, port, accepted } = await oneShotServer();
  const spares = new SpareConnections();
  const to = { host: '127.0.0.1', port };
  try {
    spares.prime('i1', to);
    await until(() => accepted.length === 1); // opened before any request
    const first = spares.take('i1', to);
    assert.equal(first.preopened, true);
    assert.equal(await roundTrip(first.socket, 'a'), 'echo a');
    await until(() => accepted.length === 2); // the next spare, opened by the take
    assert.equal(spares.size, 1);
    const second = spares.take('i1', to);
    assert.equal(second.preopened, true);
    assert.equal(await roundTrip(second.socket, 'b'), 'echo b');
  } finally {
    spares.closeAll();
    server.close();
  }
});

test('an instance never primed (or dropped) dials per request and keeps nothing open', async () => {
  const { server, port, accepted } = await oneShotServer();
  const spares = new SpareConnections();
  const to = { host: '127.0.0.1', port };
  try {
    const c = spares.take('i2', to);
    assert.equal(c.preopened, false);
    assert.equal(await roundTrip(c.socket, 'x'), 'echo x');
    assert.equal(spares.size, 0);
    spares.prime('i2', to);
    await until(() => accepted.length === 2);
    spares.drop('i2'); // before a snapshot, or on stop: the spare is closed, none reopens
    await until(() => accepted[1].destroyed || accepted[1].readableEnded);
    assert.equal(spares.size, 0);
    assert.equal(spares.take('i2', to).preopened, false);
    assert.equal(spares.size, 0, 'a dropped instance is not primed again by a take');
  } finally {
    spares.closeAll();
    server.close();
  }
});

test('a spare the function closes, or that outlives maxIdleMs, is discarded', async () => {
  const { server, port, accepted } = await oneShotServer();
  const spares = new SpareConnections(50);
  const to = { host: '127.0.0.1', port };
  try {
    spares.prime('i3', to);
    await until(() => accepted.length === 1);
    accepted[0].destroy(); // the function closes the idle connection
    await until(() => spares.size === 0);
    const c = spares.take('i3', to);
    assert.equal(c.preopened, false, 'a closed spare is never handed out');
    assert.equal(await roundTrip(c.socket, 'y'), 'echo y');
    // the take primed a new spare; unused, it is closed after maxIdleMs
    await until(() => accepted.length === 3);
    await until(() => spares.size === 0);
    await until(() => accepted.every((s) => s.readableEnded || s.destroyed));
  } finally {
    spares.closeAll();
    server.close();
  }
});
