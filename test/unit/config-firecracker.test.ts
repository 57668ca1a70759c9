import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCgroupSettings, resolveConfig } from '../../src/config.js';
import { isEmbersError } from '../../src/errors.js';

const FC_ENV = [
  'EMBERS_FC_JAILER_UID',
  'EMBERS_FC_JAILER_GID',
  'EMBERS_FC_JAILER_BIN',
  'EMBERS_FC_CHROOT_BASE',
  'EMBERS_FC_CGROUPS',
  'EMBERS_FC_PARENT_CGROUP',
  'EMBERS_FC_VSOCK_CID',
  'EMBERS_FC_DIFF_SNAPSHOTS',
];

function withEnv<T>(env: Record<string, string>, fn: () => T): T {
  const saved = Object.fromEntries(FC_ENV.map((k) => [k, process.env[k]]));
  for (const k of FC_ENV) delete process.env[k];
  Object.assign(process.env, env);
  try {
    return fn();
  } finally {
    for (const k of FC_ENV) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

test('firecracker config: defaults are no jailer, no vsock, no Diff snapshots', () => {
  withEnv({}, () =>
    assert.deepEqual(resolveConfig({ home: '/h' }).firecracker, {
      jailer: undefined,
      vsockCid: 3,
      diffSnapshots: false,
    }),
  );
});

test('firecracker config: the jailer, vsock and Diff snapshots from the environment, with their defaults', () => {
  const fc = withEnv(
    {
      EMBERS_FC_JAILER_UID: '65534',
      EMBERS_FC_VSOCK_CID: '3',
      EMBERS_FC_DIFF_SNAPSHOTS: '1',
      EMBERS_FC_CGROUPS: 'cpu.max=50000 100000; memory.max=268435456',
    },
    () => resolveConfig({ home: '/h' }).firecracker,
  );
  assert.deepEqual(fc, {
    jailer: {
      binary: 'jailer',
      uid: 65534,
      gid: 65534,
      chrootBaseDir: '/srv/jailer',
      cgroups: { 'cpu.max': '50000 100000', 'memory.max': '268435456' },
      parentCgroup: undefined,
    },
    vsockCid: 3,
    diffSnapshots: true,
  });
});

test('firecracker config: options win over the environment', () => {
  const fc = withEnv(
    { EMBERS_FC_JAILER_UID: '1', EMBERS_FC_VSOCK_CID: '9' },
    () =>
      resolveConfig({
        home: '/h',
        firecracker: {
          jailer: { uid: 123, gid: 456, chrootBaseDir: '/jails', binary: '/opt/jailer' },
          vsockCid: 4,
          diffSnapshots: false,
        },
      }).firecracker,
  );
  assert.deepEqual(fc.jailer, {
    binary: '/opt/jailer',
    uid: 123,
    gid: 456,
    chrootBaseDir: '/jails',
    cgroups: {},
    parentCgroup: undefined,
  });
  assert.equal(fc.vsockCid, 4);
});

test('firecracker config: bad values are EMB_CONFIG_INVALID naming the variable', () => {
  for (const [env, name] of [
    [{ EMBERS_FC_VSOCK_CID: '2' }, /EMBERS_FC_VSOCK_CID/],
    [{ EMBERS_FC_JAILER_UID: 'nobody' }, /EMBERS_FC_JAILER_UID/],
    [{ EMBERS_FC_JAILER_UID: '1', EMBERS_FC_CGROUPS: 'cpu' }, /EMBERS_FC_CGROUPS "cpu"/],
  ] as const) {
    assert.throws(
      () => withEnv(env as Record<string, string>, () => resolveConfig({ home: '/h' })),
      (e) => isEmbersError(e, 'EMB_CONFIG_INVALID') && name.test((e as Error).message),
    );
  }
  assert.deepEqual(parseCgroupSettings(''), {});
});
