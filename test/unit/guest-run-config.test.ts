import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import { isEmbersError } from '../../src/errors.js';
import { parseCpio, writeCpio } from '../../src/guest/cpio.js';
import { decodeExecConf } from '../../src/guest/exec-conf.js';
import { buildInstanceInitrd, validateRunConfig, type GuestRunConfig } from '../../src/guest/run-config.js';

const config: GuestRunConfig = {
  argv: ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'],
  env: ['PATH=/bin', 'GREETING=hello\nworld'],
  workingDir: '/',
  user: '65534:65534',
  hostname: 'fn-1',
};

test('buildInstanceInitrd: base bytes, zero padding to 4, then an uncompressed archive with exec.conf', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'embers-initrd-test-'));
  try {
    for (const extra of [0, 1, 2, 3]) {
      // a base of every length modulo 4: a gzip member followed by 0-3 bytes
      const base = Buffer.concat([
        gzipSync(writeCpio([{ type: 'file', name: 'init', data: '#!/bin/sh\n' }])),
        Buffer.alloc(extra, 0),
      ]);
      await writeFile(join(dir, 'base.img'), base);
      const out = join(dir, `inst-${extra}.img`);
      await buildInstanceInitrd(join(dir, 'base.img'), config, out);
      const bytes = await readFile(out);
      assert.deepEqual(bytes.subarray(0, base.length), base);
      const aligned = Math.ceil(base.length / 4) * 4;
      assert.ok(bytes.subarray(base.length, aligned).every((b) => b === 0));
      assert.equal(bytes.toString('ascii', aligned, aligned + 6), '070701');
      const entries = parseCpio(bytes.subarray(aligned));
      assert.deepEqual(
        entries.map((e) => e.name),
        ['embers', 'embers/exec.conf'],
      );
      assert.deepEqual(decodeExecConf(entries[1].data.toString('utf8')), config);
      assert.deepEqual(
        parseCpio(gunzipSync(base.subarray(0, base.length - extra))).map((e) => e.name),
        ['init'],
      );
    }
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.includes('.tmp-')),
      [],
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('buildInstanceInitrd: a missing base is EMB_GUEST_KERNEL_MISSING', async () => {
  await assert.rejects(buildInstanceInitrd('/nonexistent/base.img', config, join(tmpdir(), 'never')), (e) =>
    isEmbersError(e, 'EMB_GUEST_KERNEL_MISSING'),
  );
});

test('validateRunConfig: defaults and refusals', () => {
  assert.equal(validateRunConfig({ ...config, workingDir: '' }).workingDir, '/');
  const bad = (c: Partial<GuestRunConfig>) => () => validateRunConfig({ ...config, ...c });
  const code = (e: unknown) => isEmbersError(e, 'EMB_GUEST_RUN_CONFIG_INVALID');
  assert.throws(bad({ argv: [] }), code);
  assert.throws(bad({ argv: [''] }), code);
  assert.throws(bad({ argv: ['a\0b'] }), code);
  assert.throws(bad({ env: ['NOEQUALS'] }), code);
  assert.throws(bad({ env: ['=v'] }), code);
  assert.throws(bad({ workingDir: 'relative' }), code);
  assert.throws(bad({ user: 'a:b:c' }), code);
  assert.throws(bad({ user: 'a b' }), code);
  assert.throws(bad({ user: '99999999999' }), code);
  assert.throws(bad({ hostname: 'bad host' }), code);
  for (const user of ['', 'app', '1000', '1000:1000', 'app:staff', '0:0'])
    assert.equal(validateRunConfig({ ...config, user }).user, user);
});
