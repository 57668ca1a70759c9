import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { QmpClient } from '../../src/vmm/qemu/qmp.js';
import { waitForExit } from '../../src/vmm/process.js';

test('QMP client against a real QEMU: negotiate, query, stop/cont, refused command, quit', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'embers-qmp-'));
  const sock = join(dir, 'qmp.sock');
  const qemu = spawn(
    'qemu-system-x86_64',
    [
      '-M',
      'microvm',
      '-accel',
      'tcg',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-S',
      '-qmp',
      `unix:${sock},server=on,wait=off`,
    ],
    {
      stdio: 'ignore',
    },
  );
  try {
    let qmp: QmpClient | undefined;
    for (let i = 0; i < 200 && !qmp; i++) {
      qmp = await QmpClient.connect(sock, 1000).catch(async () => {
        await new Promise((r) => setTimeout(r, 25));
        return undefined;
      });
    }
    assert.ok(qmp, 'QMP socket came up');
    const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
    assert.equal(status.running, false);
    await qmp.execute('cont');
    assert.equal((await qmp.execute<{ running: boolean }>('query-status')).running, true);
    await qmp.execute('stop');
    await qmp.waitEvent('STOP', 5000);
    await assert.rejects(
      qmp.execute('no-such-command'),
      (e) => isEmbersError(e, 'EMB_VMM_COMMAND_FAILED') && /no-such-command/.test((e as Error).message),
    );
    await qmp.execute('quit');
    qmp.close();
    assert.ok(await waitForExit(qemu.pid!, 5000));
  } finally {
    qemu.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});
