import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmbersError } from '../../src/errors.js';

/** Each situation of a code of the general area (src/error-catalogue/general.ts): its message from its details. */
function expectMessages(cases: [EmbersError, string][]): void {
  for (const [e, message] of cases) assert.equal(e.message, message, `${e.code} ${JSON.stringify(e.details)}`);
}

test('EMB_USAGE: a refused flag value, a flag that needs another, a synopsis, an unknown command or option, the parser', () => {
  expectMessages([
    [
      EmbersError.of('EMB_USAGE', { option: '--accel', value: 'xen', expected: 'auto, kvm or tcg' }),
      '--accel must be auto, kvm or tcg, not "xen"',
    ],
    [
      EmbersError.of('EMB_USAGE', { option: '--port', value: '80x', expected: 'an integer from 1 to 65535' }),
      '--port must be an integer from 1 to 65535, not "80x"',
    ],
    [
      EmbersError.of('EMB_USAGE', { option: '--restore-hook-timeout', problem: 'needs --restore-hook' }),
      '--restore-hook-timeout needs --restore-hook',
    ],
    [EmbersError.of('EMB_USAGE', { option: '--home', problem: 'needs a value' }), '--home needs a value'],
    [
      EmbersError.of('EMB_USAGE', { option: 'the number of exec arguments', value: 300, expected: 'at most 255' }),
      'the number of exec arguments must be at most 255, not 300',
    ],
    [EmbersError.of('EMB_USAGE', { usage: 'embers logs <instance>' }), 'usage: embers logs <instance>'],
    [EmbersError.of('EMB_USAGE', { unknownCommand: 'frobnicate' }), 'unknown command "frobnicate"'],
    [
      EmbersError.of('EMB_USAGE', { unknownOption: '--hom', globalOptions: ['--home', '--json'] }),
      'unknown option --hom before the command; global options are --home --json',
    ],
    [EmbersError.of('EMB_USAGE', { reason: "Unknown option '--frob'", argv: ['--frob'] }), "Unknown option '--frob'"],
  ]);
});

test('EMB_CONFIG_INVALID: what is accepted, what is wrong with the value, without a value, with the cause', () => {
  expectMessages([
    [
      EmbersError.of('EMB_CONFIG_INVALID', { option: 'EMBERS_ACCEL', value: 'xen', expected: 'auto, kvm or tcg' }),
      'EMBERS_ACCEL must be auto, kvm or tcg, not "xen"',
    ],
    [
      EmbersError.of('EMB_CONFIG_INVALID', { option: 'concurrency', value: 0, expected: 'an integer from 1 to 64' }),
      'concurrency must be an integer from 1 to 64, not 0',
    ],
    [
      EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'S3 endpoint',
        value: 'ftp://x',
        problem: 'is not an http(s) URL',
      }),
      'S3 endpoint "ftp://x" is not an http(s) URL',
    ],
    [
      EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'EMBERS_S3_BUCKET',
        problem: 'is not set, but other EMBERS_S3_* variables are',
      }),
      'EMBERS_S3_BUCKET is not set, but other EMBERS_S3_* variables are',
    ],
    [
      EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'the API token (EMBERS_API_TOKEN)',
        expected: 'at least 16 characters',
      }),
      'the API token (EMBERS_API_TOKEN) must be at least 16 characters',
    ],
    [
      EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'the registry credentials file',
        value: '/root/.docker/config.json',
        problem: 'is not valid',
        reason: 'not a JSON object',
      }),
      'the registry credentials file "/root/.docker/config.json" is not valid: not a JSON object',
    ],
    [
      EmbersError.of('EMB_CONFIG_INVALID', { option: 'memory', value: 1e9, field: 'memoryMiB' }),
      'memory 1000000000 is not valid',
    ],
  ]);
});

test('EMB_FUNCTION_SPEC_INVALID: the field names the value unless an option says otherwise', () => {
  expectMessages([
    [
      EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
        field: 'port',
        value: 70000,
        expected: 'an integer from 1 to 65535',
      }),
      'port must be an integer from 1 to 65535, not 70000',
    ],
    [
      EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
        field: 'vcpus',
        value: 8,
        problem: 'is not possible here: this host has 2 CPU(s)',
      }),
      'vcpus 8 is not possible here: this host has 2 CPU(s)',
    ],
    [
      EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
        option: 'the function spec',
        problem: 'has an unknown field "memory"',
        field: 'memory',
      }),
      'the function spec has an unknown field "memory"',
    ],
    [
      EmbersError.of('EMB_FUNCTION_SPEC_INVALID', { expected: 'a JSON object' }),
      'the function spec must be a JSON object',
    ],
  ]);
});

test('EMB_HOST_COMMAND_FAILED: not started, failed by its exit code, killed or timed out', () => {
  expectMessages([
    [
      EmbersError.of('EMB_HOST_COMMAND_FAILED', { cmd: 'ip', args: ['link'], spawnError: 'spawn ip EACCES' }),
      'could not run ip: spawn ip EACCES',
    ],
    [
      EmbersError.of('EMB_HOST_COMMAND_FAILED', {
        cmd: 'ip',
        args: ['link', 'del', 'v1'],
        exit: 2,
        stderr: 'RTNETLINK answers: Operation not permitted\n',
      }),
      'ip link del v1 failed (exit code 2): RTNETLINK answers: Operation not permitted',
    ],
    [
      EmbersError.of('EMB_HOST_COMMAND_FAILED', {
        cmd: 'mke2fs',
        args: ['-q'],
        exit: 128,
        stderr: '',
        failure: 'timed out after 1000 ms',
        output: 'writing inode tables',
      }),
      'mke2fs -q failed (timed out after 1000 ms): writing inode tables',
    ],
    [EmbersError.of('EMB_HOST_COMMAND_FAILED', { cmd: 'true', args: [], exit: 1 }), 'true failed (exit code 1)'],
  ]);
});

test('EMB_API_*, EMB_NODE_BUSY and EMB_INTERNAL: each situation names what failed', () => {
  expectMessages([
    [EmbersError.of('EMB_API_ROUTE_NOT_FOUND', { method: 'GET', url: '/v2/nothing' }), 'no route GET /v2/nothing'],
    [
      EmbersError.of('EMB_API_ROUTE_NOT_FOUND', {
        method: 'GET',
        url: '/v1/snapshots/snap-1/files/memory.bin',
        problem: 'this node serves no snapshots to peers: start it with EMBERS_PEER_TOKEN',
      }),
      'this node serves no snapshots to peers: start it with EMBERS_PEER_TOKEN',
    ],
    [EmbersError.of('EMB_API_BODY_TOO_LARGE', { limit: 1024 }), 'the request body is larger than 1024 bytes'],
    [
      EmbersError.of('EMB_API_BODY_TOO_LARGE', { limit: 1024, what: 'invocation' }),
      'the invocation body is larger than 1024 bytes',
    ],
    [
      EmbersError.of('EMB_API_UNREACHABLE', { api: 'http://127.0.0.1:7070', reason: 'connect ECONNREFUSED' }),
      'cannot reach the embers daemon at http://127.0.0.1:7070: connect ECONNREFUSED',
    ],
    [EmbersError.of('EMB_NODE_BUSY', { home: '/h', pid: 42 }), 'embers serve already runs for /h (pid 42)'],
    [EmbersError.of('EMB_NODE_BUSY', { home: '/h' }), 'embers serve already runs for /h'],
    [
      EmbersError.of('EMB_INTERNAL', { during: 'cpio', problem: 'truncated header at offset 8', offset: 8 }),
      'cpio: truncated header at offset 8',
    ],
    [EmbersError.of('EMB_INTERNAL', { problem: 'the daemon answered 500: oops' }), 'the daemon answered 500: oops'],
    [
      EmbersError.of('EMB_FUNCTION_QUEUE_FULL', { function: 'hello', instances: 2, maxInstances: 2, queued: 100 }),
      'function hello: all 2 instance(s) are busy (maxInstances 2) and 100 request(s) already wait',
    ],
  ]);
});
