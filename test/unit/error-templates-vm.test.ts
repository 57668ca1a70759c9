import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmbersError, ERRORS, type ErrorDetails } from '../../src/errors.js';

/**
 * The templates of the VM area (guest kit, network, hypervisor, guest agent, instances): for each
 * code used in several situations, the message each situation gets from its typed details. The
 * expected texts are the messages the call sites wrote by hand before the templates.
 */
function check(cases: [EmbersError, string][]): void {
  for (const [err, message] of cases) {
    assert.equal(err.message, message, `${err.code} ${JSON.stringify(err.details)}`);
    assert.equal(err.hint, ERRORS[err.code].hint, `${err.code}: the catalogue's hint`);
  }
}

test('templates: EMB_GUEST_KERNEL_MISSING says which file is missing or not a vmlinux', () => {
  const of = (d: ErrorDetails<'EMB_GUEST_KERNEL_MISSING'>) => EmbersError.of('EMB_GUEST_KERNEL_MISSING', d);
  check([
    [of({ path: '/k/vmlinux', elf: null }), '/k/vmlinux is not an x86-64 ELF vmlinux'],
    [of({ vmlinuzPath: '/k/vmlinuz', attempts: [] }), 'no ELF vmlinux found inside /k/vmlinuz'],
    [of({ baseInitrd: '/k/initrd' }), 'base initramfs /k/initrd is missing'],
  ]);
});

test('templates: EMB_GUEST_BUILD_FAILED names the step and its input', () => {
  const of = (d: ErrorDetails<'EMB_GUEST_BUILD_FAILED'>) => EmbersError.of('EMB_GUEST_BUILD_FAILED', d);
  const pkgs = [
    { name: 'a', version: '1' },
    { name: 'b', version: '2:3' },
  ];
  check([
    [of({ problem: 'package-unknown', pkg: 'busybox-static' }), 'apt knows no installable version of busybox-static'],
    [
      of({ problem: 'depends-missing', meta: 'linux-image-amd64', metaVersion: '6.1' }),
      'linux-image-amd64 6.1 has no Depends field',
    ],
    [
      of({ problem: 'kernel-package-unknown', meta: 'linux-image-amd64', metaVersion: '6.1', depends: 'x, y' }),
      'cannot find the versioned kernel package in the dependencies of linux-image-amd64 6.1: x, y',
    ],
    [of({ problem: 'download-failed', pkgs }), 'downloading a=1 b=2:3 failed'],
    [
      of({ problem: 'deb-missing', pkg: 'b=2:3', pkgs, files: [] }),
      'apt-get download did not produce a .deb for b=2:3',
    ],
    [
      of({ problem: 'kernel-version-unknown', pkg: 'linux-image-6.1.0-1-amd64', moduleDirs: [] }),
      'cannot tell the kernel version of linux-image-6.1.0-1-amd64: lib/modules holds nothing',
    ],
    [
      of({ problem: 'kernel-version-unknown', pkg: 'p', moduleDirs: ['6.1.0-1-amd64', '6.1.0-2-amd64'] }),
      'cannot tell the kernel version of p: lib/modules holds 6.1.0-1-amd64, 6.1.0-2-amd64',
    ],
    [
      of({ problem: 'vmlinuz-missing', pkg: 'p', kernelVersion: '6.1.0-1-amd64', vmlinuz: '/r/boot/vmlinuz' }),
      'p has no boot/vmlinuz-6.1.0-1-amd64',
    ],
    [
      of({ problem: 'modules-not-found', modules: ['virtio_blk', 'ext4'], root: '/r', kernelVersion: 'k' }),
      'modprobe found none of the modules virtio_blk ext4 in /r',
    ],
    [
      of({ problem: 'module-not-elf', path: '/m/a.ko.xz' }),
      'module /m/a.ko.xz is not an ELF object after decompression',
    ],
    [of({ problem: 'duplicate-module', file: 'a.ko' }), 'two modules named a.ko'],
    [of({ problem: 'busybox-not-static', path: '/bin/busybox' }), '/bin/busybox is not a static x86-64 busybox'],
    [of({ problem: 'source-tarball-missing', srcParent: '/s/usr/src' }), 'no source tarball in /s/usr/src'],
    [
      of({ problem: 'source-folder-missing', tarball: 'linux-source-6.1.tar.xz' }),
      'the source tarball linux-source-6.1.tar.xz has no linux-source-* folder',
    ],
    [
      of({ problem: 'config-overrides-dropped', missing: ['CONFIG_A=y', 'CONFIG_B=y'], overridesPath: '/o' }),
      "make olddefconfig dropped embers' kernel config overrides: CONFIG_A=y, CONFIG_B=y (a dependency is off in the base config)",
    ],
    [
      of({ problem: 'headers-unknown', kernelVersion: 'odd', packageVersion: '1' }),
      'cannot tell the headers packages of kernel odd (expected <x.y.z>-<abi>-amd64)',
    ],
    [
      of({ problem: 'makefile-unexpected', makefile: '/h/Makefile' }),
      '/h/Makefile does not include /usr/src/…-common/Makefile as expected',
    ],
    [of({ problem: 'module-without-cmdline', ko: '/m/v.ko' }), '/m/v.ko was built without the device= parameter'],
    [of({ problem: 'kit-invalid', dir: '/c/kit' }), '/c/kit exists but holds no valid kit: remove it and build again'],
    [
      of({ problem: 'step-failed', reason: 'tar -xf x failed (exit code 2)', cmd: 'tar' }),
      'building the guest kit failed: tar -xf x failed (exit code 2)',
    ],
  ]);
});

test('templates: EMB_GUEST_RUN_CONFIG_INVALID names the field and its value', () => {
  const of = (d: ErrorDetails<'EMB_GUEST_RUN_CONFIG_INVALID'>) => EmbersError.of('EMB_GUEST_RUN_CONFIG_INVALID', d);
  check([
    [
      of({ problem: 'no-command', argv: [] }),
      'the function has no command: argv is empty (the image has neither Entrypoint nor Cmd?)',
    ],
    [of({ problem: 'argument-not-string', argv: ['a', 1] }), 'argv holds a non-string'],
    [of({ problem: 'argument-nul', arg: 'a\0b' }), 'argument "a\\u0000b" contains a NUL byte'],
    [of({ problem: 'env-not-key-value', env: 'NOEQUALS' }), 'environment entry "NOEQUALS" is not KEY=VALUE'],
    [of({ problem: 'env-nul', env: 'A=\0' }), 'environment entry "A=\\u0000" contains a NUL byte'],
    [
      of({ problem: 'working-dir-not-absolute', workingDir: 'rel' }),
      'working directory "rel" must be an absolute path',
    ],
    [
      of({ problem: 'user-format', user: 'a:b:c' }),
      'user "a:b:c" must be "", "name", "uid", "uid:gid" or "name:group"',
    ],
    [
      of({ problem: 'user-id-range', user: '99999999999', id: '99999999999' }),
      'user "99999999999": id 99999999999 is out of range',
    ],
    [
      of({ problem: 'hostname', hostname: 'bad host' }),
      `hostname "bad host" is not a valid host name (letters, digits, '-', '.', at most 64)`,
    ],
    [of({ problem: 'exec-conf-escape', value: 'a\\t', escape: 't' }), 'exec.conf: bad escape "\\t"'],
    [of({ problem: 'exec-conf-escape', value: 'a\\' }), 'exec.conf: bad escape "\\"'],
    [of({ problem: 'exec-conf-line', line: 'novalue' }), 'exec.conf: line without key=value: "novalue"'],
    [of({ problem: 'exec-conf-version', version: 9 }), 'exec.conf: unsupported version 9'],
    [of({ problem: 'exec-conf-version' }), 'exec.conf: unsupported version undefined'],
  ]);
});

test('templates: EMB_NET_EXHAUSTED says whether the node or the machine ran out', () => {
  check([
    [EmbersError.of('EMB_NET_EXHAUSTED', { node: 3, limit: 250 }), 'node 3 has no free network slot (250 in use)'],
    [
      EmbersError.of('EMB_NET_EXHAUSTED', { registry: '/run/embers/nodes', limit: 64 }),
      'all 64 node indexes of this machine are in use by other embers homes',
    ],
    [
      EmbersError.of('EMB_NET_SETUP_FAILED', { netns: 'emb-0-1', reason: 'sh -c … failed (exit code 2)' }),
      'could not create network slot emb-0-1: sh -c … failed (exit code 2)',
    ],
  ]);
});

test('templates: EMB_VMM_NOT_FOUND and EMB_VMM_KVM_UNAVAILABLE name the binary or what the host lacks', () => {
  const of = (d: ErrorDetails<'EMB_VMM_NOT_FOUND'>) => EmbersError.of('EMB_VMM_NOT_FOUND', d);
  const missing = ['no executable Firecracker binary (firecracker, from PATH)', 'no hardware-backed KVM (no /dev/kvm)'];
  check([
    [of({ problem: 'spawn', cmd: 'qemu-system-x86_64' }), 'qemu-system-x86_64 is not installed'],
    [of({ problem: 'binary', vmm: 'QEMU', binary: 'qemu-system-x86_64' }), 'QEMU binary qemu-system-x86_64 not found'],
    [of({ problem: 'binary', vmm: 'Firecracker', binary: '/fc' }), 'Firecracker binary /fc not found'],
    [
      of({ problem: 'version-output', binary: '/bin/true', option: '--version', stdout: 'hello\n' }),
      '/bin/true --version printed "hello", not "Firecracker vX.Y.Z": is it Firecracker?',
    ],
    [
      of({ problem: 'version-output', binary: '/fc', option: '--snapshot-version', stdout: '' }),
      '/fc --snapshot-version printed "", not a version: is it Firecracker ≥ 1.0?',
    ],
    [
      of({
        problem: 'snapshot-format',
        binary: '/fc',
        binaryVersion: '1.7.0',
        snapshotVersion: '4.0.0',
        binarySnapshotVersion: 'x',
      }),
      '/fc v1.7.0 reports snapshot format "x", not MAJOR.MINOR.PATCH',
    ],
    [
      of({ problem: 'snapshot-format', snapshotVersion: '4.0.0', binarySnapshotVersion: 'x' }),
      'firecracker reports snapshot format "x", not MAJOR.MINOR.PATCH',
    ],
    [
      of({ problem: 'host', binary: 'firecracker', binaryFound: false, missing }),
      'Firecracker was requested but this host has no executable Firecracker binary (firecracker, from PATH) and no hardware-backed KVM (no /dev/kvm)',
    ],
    [
      EmbersError.of('EMB_VMM_KVM_UNAVAILABLE', { binaryFound: true, missing: [missing[1]] }),
      'Firecracker was requested but this host has no hardware-backed KVM (no /dev/kvm)',
    ],
  ]);
});

test('templates: EMB_VMM_START_FAILED says what was started and how it ended, with the tail of its output', () => {
  const long = `${'x'.repeat(1000)}\nlast line\n\n`;
  check([
    [
      EmbersError.of('EMB_VMM_START_FAILED', { cmd: 'qemu-system-x86_64', reason: 'spawn EACCES' }),
      'could not start qemu-system-x86_64: spawn EACCES',
    ],
    [
      EmbersError.of('EMB_VMM_START_FAILED', { what: 'QEMU for fn-1', log: '/l', tail: 'bad option\n' }),
      'QEMU for fn-1 exited before it was ready: bad option',
    ],
    [
      EmbersError.of('EMB_VMM_START_FAILED', { what: 'QEMU for fn-1', log: '/l', tail: long }),
      `QEMU for fn-1 exited before it was ready: …${long.trim().slice(-800)}`,
    ],
    [
      EmbersError.of('EMB_VMM_START_FAILED', { what: 'Firecracker for fn-1', command: 'firecracker', tail: 'boom' }),
      'Firecracker for fn-1 exited before its API was ready:\nboom',
    ],
    [
      EmbersError.of('EMB_VMM_START_FAILED', { what: 'F', command: 'firecracker', exitCode: null, tail: 't' }),
      'F was killed before its API was ready:\nt',
    ],
    [
      EmbersError.of('EMB_VMM_START_FAILED', { what: 'F', command: 'firecracker', exitCode: 1, tail: 't' }),
      'F exited with code 1 before its API was ready:\nt',
    ],
  ]);
});

test('templates: EMB_VMM_COMMAND_FAILED names the command or exchange that failed and why', () => {
  const of = (d: ErrorDetails<'EMB_VMM_COMMAND_FAILED'>) => EmbersError.of('EMB_VMM_COMMAND_FAILED', d);
  check([
    [
      of({ problem: 'qmp-connect', path: '/q.sock', reason: 'connect ECONNREFUSED' }),
      'cannot connect to QMP socket /q.sock: connect ECONNREFUSED',
    ],
    [
      of({ problem: 'qmp-refused', command: 'no-such-command', qmpError: { class: 'CommandNotFound', desc: 'nope' } }),
      'QEMU refused no-such-command: nope (CommandNotFound)',
    ],
    [of({ problem: 'qmp-refused', command: 'stop', qmpError: {} }), 'QEMU refused stop: unknown error (Error)'],
    [
      of({ problem: 'qmp-broken', command: 'cont', reason: 'QMP connection closed', socket: '/q' }),
      'QMP cont failed: QMP connection closed',
    ],
    [of({ problem: 'not-paused', vm: 'fn-1' }), 'VM fn-1 must be paused before a snapshot'],
    [
      of({ problem: 'not-paused', vm: 'fn-1', state: 'Running' }),
      'VM fn-1 must be paused before a snapshot (Firecracker reports "Running")',
    ],
    [
      of({
        problem: 'migration',
        migrate: { status: 'failed', 'error-desc': 'Unable to write to file: No space left on device' },
      }),
      'QEMU migration failed: Unable to write to file: No space left on device',
    ],
    [of({ problem: 'migration', migrate: { status: 'cancelled' } }), 'QEMU migration cancelled: no reason given'],
    [
      of({ problem: 'uffd-no-counters', memoryFile: '/m', output: 'panic', log: '/l' }),
      'uffd-handler for /m wrote no counters: panic',
    ],
    [
      of({ problem: 'uffd-no-ready-file' }),
      'uffd-handler was started without a ready file: pass readyPath to wait for it',
    ],
    [
      of({ problem: 'chunk-order', file: '/m', chunks: 4 }),
      'the fetch order of /m must name each of its 4 chunks once',
    ],
    [
      of({ problem: 'page-server-gone', file: '/m', verified: 2, chunks: 4 }),
      'the page server for /m went away after verifying 2 of 4 chunks',
    ],
    [
      of({ problem: 'page-server-unreachable', path: '/c.sock', reason: 'connect ENOENT /c.sock' }),
      "cannot reach the page server's control socket /c.sock: connect ENOENT /c.sock",
    ],
    [of({ problem: 'download-cancelled', file: '/m' }), 'the download of /m was cancelled'],
    [
      of({ problem: 'early-restore-abandoned', id: 'snap-1' }),
      'the early restore of snap-1 was abandoned before its page server started',
    ],
  ]);
});

test('templates: EMB_VMM_TIMEOUT says what did not happen within how long', () => {
  const of = (d: ErrorDetails<'EMB_VMM_TIMEOUT'>) => EmbersError.of('EMB_VMM_TIMEOUT', d);
  check([
    [
      of({ problem: 'path', what: 'QEMU for fn-1', path: '/q.sock', timeoutMs: 10000, log: '/l' }),
      'QEMU for fn-1 did not create /q.sock within 10000 ms',
    ],
    [of({ problem: 'kill', pid: 42 }), 'process 42 did not exit after SIGKILL'],
    [of({ problem: 'qmp-connect', path: '/q', timeoutMs: 5 }), 'QMP socket /q did not accept a connection in 5 ms'],
    [
      of({ problem: 'qmp-command', command: 'stop', timeoutMs: 5, socket: '/q' }),
      'QMP command stop got no answer in 5 ms',
    ],
    [of({ problem: 'qmp-event', event: 'STOP', timeoutMs: 5, socket: '/q' }), 'QMP event STOP did not arrive in 5 ms'],
    [of({ problem: 'migration', timeoutMs: 60000, migrate: {} }), 'QEMU migration did not complete in 60000 ms'],
    [
      of({ problem: 'api-ready', what: 'Firecracker for fn-1', socket: '/a.sock', timeoutMs: 5 }),
      'Firecracker for fn-1 created /a.sock but its API did not answer within 5 ms',
    ],
    [
      of({ problem: 'api-call', method: 'GET', path: '/', socket: '/a', timeoutMs: 5 }),
      'Firecracker did not answer GET / within 5 ms',
    ],
    [
      of({ problem: 'uffd-exit', pid: 7, memoryFile: '/m', timeoutMs: 5 }),
      'uffd-handler 7 for /m did not exit within 5 ms',
    ],
    [
      of({ problem: 'page-server-socket', id: 'snap-1', path: '/c.sock' }),
      'the page server for snap-1 did not open its control socket /c.sock',
    ],
  ]);
});

test('templates: the Firecracker API errors name method, path and the fault or transport failure', () => {
  const where = { method: 'PUT', path: '/snapshot/load', socket: '/a.sock' };
  check([
    [
      EmbersError.of('EMB_VMM_API_FAULT', { ...where, statusCode: 400, faultMessage: 'bad' }),
      'Firecracker refused PUT /snapshot/load (HTTP 400): bad',
    ],
    [
      EmbersError.of('EMB_VMM_API_UNREACHABLE', {
        stage: 'request',
        ...where,
        errno: 'ENOENT',
        reason: 'connect ENOENT /a.sock',
      }),
      'Firecracker API /a.sock failed on PUT /snapshot/load: ENOENT connect ENOENT /a.sock',
    ],
    [
      EmbersError.of('EMB_VMM_API_UNREACHABLE', { stage: 'request', ...where, reason: 'socket hang up' }),
      'Firecracker API /a.sock failed on PUT /snapshot/load: socket hang up',
    ],
    [
      EmbersError.of('EMB_VMM_API_UNREACHABLE', { stage: 'response', ...where, reason: 'aborted' }),
      'Firecracker API connection broke during PUT /snapshot/load: aborted',
    ],
    [
      EmbersError.of('EMB_VMM_CLEANUP_FAILED', { vm: 'fn-1', leaked: ['/a', '/b'], steps: [] }),
      'stopping fn-1 left /a, /b',
    ],
  ]);
});

test('templates: the guest agent errors say which channel or answer failed and why', () => {
  const failed = (d: ErrorDetails<'EMB_GUEST_AGENT_FAILED'>) => EmbersError.of('EMB_GUEST_AGENT_FAILED', d);
  check([
    [
      EmbersError.of('EMB_GUEST_AGENT_UNREACHABLE', {
        socket: '/v.sock',
        channel: 'vsock',
        reason: 'no answer to HELLO in time',
      }),
      'the guest agent at /v.sock (vsock) did not answer: no answer to HELLO in time',
    ],
    [
      EmbersError.of('EMB_GUEST_AGENT_UNREACHABLE', { name: 'fn-1' }),
      'instance fn-1 has no guest agent channel (it was started before embers had one, or restored from such a snapshot)',
    ],
    [
      failed({ problem: 'frame-length', length: 0, expected: '1..65536' }),
      'the guest agent sent a frame of length 0 (1..65536 expected): the channel is out of step',
    ],
    [
      failed({ problem: 'short-answer', what: 'FIXUP', length: 3, expected: 'at least 17' }),
      "the guest agent's FIXUP answer is 3 bytes (at least 17 expected)",
    ],
    [
      failed({ problem: 'short-answer', what: 'EXIT', length: 4, expected: '5' }),
      "the guest agent's EXIT answer is 4 bytes (5 expected)",
    ],
    [failed({ problem: 'run-state', state: 9 }), 'the guest agent reported an unknown run state 9'],
    [
      failed({ problem: 'refused', what: 'the command', reason: 'no such file' }),
      'the guest agent refused the command: no such file',
    ],
    [
      failed({ problem: 'unexpected-type', what: 'HELLO', type: 0x8a }),
      'the guest agent answered HELLO with message type 0x8a',
    ],
  ]);
});

test('templates: EMB_RESTORE_HOOK_FAILED says how the hook ended, then its output', () => {
  const hook = { instance: 'c-1', hook: '/hook.sh', timeoutMs: 5000, output: '' };
  check([
    [
      EmbersError.of('EMB_RESTORE_HOOK_FAILED', { ...hook, state: 'exited', code: 3, output: 'hook refuses\n' }),
      'the restore hook /hook.sh of clone c-1 exited with status 3: the clone was stopped\nhook refuses',
    ],
    [
      EmbersError.of('EMB_RESTORE_HOOK_FAILED', { ...hook, state: 'signaled', code: 9 }),
      'the restore hook /hook.sh of clone c-1 was killed by signal 9: the clone was stopped',
    ],
    [
      EmbersError.of('EMB_RESTORE_HOOK_FAILED', { ...hook, state: 'timeout', code: 0 }),
      'the restore hook /hook.sh of clone c-1 did not finish in 5000 ms (killed): the clone was stopped',
    ],
    [
      EmbersError.of('EMB_RESTORE_HOOK_FAILED', { ...hook, state: 'not-started', code: 2 }),
      'the restore hook /hook.sh of clone c-1 could not start (errno 2): the clone was stopped',
    ],
  ]);
});

test('templates: the instance errors name the instance, its address and why', () => {
  check([
    [
      EmbersError.of('EMB_INSTANCE_NOT_READY', {
        ip: '10.0.0.2',
        port: 8080,
        timeoutMs: 100,
        lastError: 'ECONNREFUSED',
      }),
      'the function did not answer on 10.0.0.2:8080 within 100 ms (last error: ECONNREFUSED)',
    ],
    [
      EmbersError.of('EMB_INSTANCE_NOT_READY', {
        ip: '10.0.0.2',
        port: 8080,
        vmm: 'qemu',
        consoleTail: 'Kernel panic',
      }),
      'the VM stopped before the function answered: the qemu process exited; console tail:\nKernel panic',
    ],
    [
      EmbersError.of('EMB_INSTANCE_INVOKE_FAILED', {
        name: 'fn-1',
        ip: '10.0.0.2',
        port: 8080,
        path: '/x',
        reason: 'socket hang up',
      }),
      'request to fn-1 (10.0.0.2:8080/x) failed: socket hang up',
    ],
    [
      EmbersError.of('EMB_INSTANCE_INVOKE_FAILED', { name: 'fn-1', id: 'snap-1', reason: 'ECONNRESET' }),
      'the first request to fn-1, restored from snap-1, failed: ECONNRESET',
    ],
    [
      EmbersError.of('EMB_INSTANCE_INVOKE_FAILED', { name: 'fn-1', reason: 'ECONNRESET' }),
      'request to instance fn-1 failed: ECONNRESET',
    ],
  ]);
});
