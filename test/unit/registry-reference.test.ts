import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { locateImage } from '../../src/image/locate.js';
import {
  formatImageReference,
  parseImageReference,
  registryEndpoint,
  splitHostPort,
} from '../../src/image/registry/reference.js';

const D = `sha256:${'ab'.repeat(32)}`;

test('registry references: Docker Hub defaults, registries with ports, tags and digests', () => {
  const cases: [string, string, Record<string, string>][] = [
    [
      'alpine',
      'docker.io/library/alpine:latest',
      { registry: 'docker.io', repository: 'library/alpine', tag: 'latest' },
    ],
    [
      'alpine:3.20',
      'docker.io/library/alpine:3.20',
      { registry: 'docker.io', repository: 'library/alpine', tag: '3.20' },
    ],
    ['acme/fn', 'docker.io/acme/fn:latest', { registry: 'docker.io', repository: 'acme/fn', tag: 'latest' }],
    [
      'docker.io/alpine',
      'docker.io/library/alpine:latest',
      { registry: 'docker.io', repository: 'library/alpine', tag: 'latest' },
    ],
    [
      'index.docker.io/library/alpine:edge',
      'docker.io/library/alpine:edge',
      { registry: 'docker.io', repository: 'library/alpine', tag: 'edge' },
    ],
    ['ghcr.io/acme/fn:1.2', 'ghcr.io/acme/fn:1.2', { registry: 'ghcr.io', repository: 'acme/fn', tag: '1.2' }],
    [
      'ghcr.io/acme/team/fn:v1_rc-2',
      'ghcr.io/acme/team/fn:v1_rc-2',
      { registry: 'ghcr.io', repository: 'acme/team/fn', tag: 'v1_rc-2' },
    ],
    ['localhost:5000/fn', 'localhost:5000/fn:latest', { registry: 'localhost:5000', repository: 'fn', tag: 'latest' }],
    ['localhost/fn:x', 'localhost/fn:x', { registry: 'localhost', repository: 'fn', tag: 'x' }],
    [`localhost:5000/fn@${D}`, `localhost:5000/fn@${D}`, { registry: 'localhost:5000', repository: 'fn', digest: D }],
    [
      `127.0.0.1:5000/a/b:t@${D}`,
      `127.0.0.1:5000/a/b:t@${D}`,
      { registry: '127.0.0.1:5000', repository: 'a/b', tag: 't', digest: D },
    ],
    ['[::1]:5000/fn:1', '[::1]:5000/fn:1', { registry: '[::1]:5000', repository: 'fn', tag: '1' }],
    ['docker://quay.io/org/img:tag', 'quay.io/org/img:tag', { registry: 'quay.io', repository: 'org/img', tag: 'tag' }],
    ['Registry/app', 'Registry/app:latest', { registry: 'Registry', repository: 'app', tag: 'latest' }],
    ['a.b/c__d/e-f/g.h:T', 'a.b/c__d/e-f/g.h:T', { registry: 'a.b', repository: 'c__d/e-f/g.h', tag: 'T' }],
  ];
  for (const [input, canonical, parts] of cases) {
    const r = parseImageReference(input);
    assert.deepEqual(r, parts, input);
    assert.equal(formatImageReference(r), canonical, input);
    assert.deepEqual(parseImageReference(canonical), r, `${canonical} is stable`);
  }
});

test('invalid references are EMB_IMAGE_REFERENCE_INVALID with the reason', () => {
  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['ghcr.io/Acme/fn', /repositories are lowercase/],
    ['acme/fn:', /tag "" is not valid/],
    ['acme/fn:-x', /tag "-x" is not valid/],
    [`acme/fn:${'t'.repeat(129)}`, /is not valid/],
    ['acme/fn@sha256:abc', /not sha256:<64 lowercase hex>/],
    [`acme/fn@sha512:${'a'.repeat(128)}`, /sha256 digests only, not sha512/],
    ['acme//fn', /component "" is not valid/],
    ['acme/fn_/x', /component "fn_" is not valid/],
    ['my reg/fn', /white space/],
    ['host:99999/fn', /not a registry host\[:port\]/],
    ['host:abc/fn', /not a registry host\[:port\]/],
    ['ghcr.io/', /names no repository/],
    [`ghcr.io/${'a'.repeat(260)}`, /longer than 255/],
  ];
  for (const [input, why] of bad) {
    assert.throws(
      () => parseImageReference(input),
      (e: unknown) => isEmbersError(e, 'EMB_IMAGE_REFERENCE_INVALID') && why.test((e as Error).message),
      `${JSON.stringify(input)} should be refused with ${why}`,
    );
  }
});

test('registry endpoints and host:port splitting', () => {
  assert.equal(registryEndpoint('docker.io'), 'registry-1.docker.io');
  assert.equal(registryEndpoint('ghcr.io'), 'ghcr.io');
  assert.deepEqual(splitHostPort('localhost:5000'), { hostname: 'localhost', port: 5000 });
  assert.deepEqual(splitHostPort('ghcr.io'), { hostname: 'ghcr.io' });
  assert.deepEqual(splitHostPort('[::1]:5000'), { hostname: '::1', port: 5000 });
  assert.deepEqual(splitHostPort('[::1]'), { hostname: '::1' });
});

test('local or registry: decided by the reference form', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'embers-locate-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'layout'));
  const cwd = process.cwd();
  process.chdir(dir);
  t.after(() => process.chdir(cwd));
  const local = async (ref: string, path: string) =>
    assert.deepEqual(await locateImage(ref), { kind: 'local', path }, ref);
  await local(`oci:${dir}/layout:v1`, `${dir}/layout:v1`);
  await local('docker-archive:/x/img.tar', '/x/img.tar');
  await local('/nonexistent/layout', '/nonexistent/layout');
  await local('./layout', './layout');
  await local('layout', 'layout'); // exists here
  await local('layout:v1', 'layout:v1');
  await local(`layout@${D}`, `layout@${D}`);
  const registry = async (ref: string, canonical: string) => {
    const l = await locateImage(ref);
    assert.equal(l.kind, 'registry', ref);
    assert.equal(l.kind === 'registry' && formatImageReference(l.ref), canonical);
  };
  await registry('alpine', 'docker.io/library/alpine:latest');
  await registry('nolayout:v1', 'docker.io/library/nolayout:v1');
  await registry('localhost:5000/fn:1', 'localhost:5000/fn:1');
  await registry('docker://layout', 'docker.io/library/layout:latest');
  await assert.rejects(locateImage('Not A Ref'), (e: unknown) => isEmbersError(e, 'EMB_IMAGE_REFERENCE_INVALID'));
});
