import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeExecConf, encodeExecConf, escapeValue, unescapeValue } from '../../src/guest/exec-conf.js';
import type { GuestRunConfig } from '../../src/guest/run-config.js';

test('exec.conf: escaping round-trips backslashes, newlines and carriage returns', () => {
  const samples = [
    '',
    'plain',
    'a\\b',
    'line1\nline2',
    '\\n is not a newline',
    'cr\r\nlf',
    '\\\\\n\\',
    'k=v=w',
    'ünïcødé ✓',
    '#not a comment',
  ];
  for (const s of samples) {
    const e = escapeValue(s);
    assert.ok(!e.includes('\n') && !e.includes('\r'), `escaped ${JSON.stringify(s)} has no line break`);
    assert.equal(unescapeValue(e), s);
  }
  assert.equal(escapeValue('a\\b\nc'), 'a\\\\b\\nc');
  assert.throws(() => unescapeValue('bad\\t'), /bad escape/);
  assert.throws(() => unescapeValue('trailing\\'), /bad escape/);
});

test('exec.conf: a whole configuration round-trips', () => {
  const config: GuestRunConfig = {
    argv: ['/bin/sh', '-c', 'echo "a\\b"\nexit 3', '', '--x=y'],
    env: ['PATH=/usr/bin:/bin', 'MULTI=one\ntwo', 'BACK=\\', 'EMPTY='],
    workingDir: '/srv/app dir',
    user: 'app:staff',
    hostname: 'fn-1',
  };
  const text = encodeExecConf(config);
  assert.match(text, /^version=1\n/);
  assert.equal(text.split('\n').filter((l) => l.startsWith('arg=')).length, 5);
  assert.equal(text.split('\n').filter((l) => l.startsWith('env=')).length, 4);
  assert.ok(text.endsWith('\n'));
  assert.deepEqual(decodeExecConf(text), config);
});

test('exec.conf: defaults, no hostname, unknown keys and comments', () => {
  const text = encodeExecConf({ argv: ['x'], env: [], workingDir: '', user: '' });
  assert.ok(!text.includes('hostname='));
  const back = decodeExecConf(`# comment\n${text}future=ignored\n\n`);
  assert.deepEqual(back, { argv: ['x'], env: [], workingDir: '/', user: '' });
  assert.throws(() => decodeExecConf('version=2\narg=x\n'), /unsupported version/);
  assert.throws(() => decodeExecConf('version=1\nnovalue\n'), /key=value/);
});
