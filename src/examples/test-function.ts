/**
 * THE test function: an OCI image built from Debian's busybox-static that serves HTTP with
 * `busybox httpd` and CGI scripts, so tests can write, read and list files on the guest's
 * disk and check every answer from the host.
 *
 * HTTP API (port 8080 unless built with another):
 *   GET /                                   -> "hello from embers\n"
 *   GET /cgi-bin/write?name=N&size=B&seed=S&sync=0|1
 *        writes /data/N: B deterministic pseudo-random bytes from seed S,
 *        runs `sync` if sync=1 (else the data may stay in the page cache),
 *        answers "<sha256>  N\n" (see expectedLine()).
 *   GET /cgi-bin/read?name=N                -> "<sha256>  N\n", or 404 "missing N\n"
 *   GET /cgi-bin/files                      -> "<sha256>  <name>\n" for every file in /data, by name
 *   GET /cgi-bin/rename?from=A&to=B&sync=0|1 -> moves /data/A to /data/B (replacing B), answers "<sha256>  B\n";
 *        404 "missing A\n" if A is not there
 *   GET /cgi-bin/delete?name=N&sync=0|1     -> removes /data/N, answers "deleted N\n"; 404 "missing N\n"
 *   GET /cgi-bin/dropcaches                 -> writes dirty pages back (`sync`), then drops the guest's
 *        page cache, dentries and inodes (`echo 3 > /proc/sys/vm/drop_caches`), so that the next
 *        reads come from the disk; answers "dropped\n"
 *   Bad arguments -> 400. Names and seeds: [A-Za-z0-9._-]+ (names not starting with a dot,
 *   seeds at most 64 characters).
 *
 * The bytes: x0 = (the first 13 hex digits of sha256(S), as a number) mod (2^31 - 2) + 1, then
 * a Park-Miller generator x := x * 16807 mod (2^31 - 1), each step printed as 8 lowercase hex
 * digits, cut to B bytes. busybox sha256sum + awk compute it in the guest (exact: every
 * intermediate stays below 2^53); expectedBytes() computes it here.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { childEnvironment } from '../config.js';
import { FIXTURE_MTIME, writeOciLayout, type FixtureImage, type LayerEntry } from './oci-layout.js';

export const TEST_FUNCTION_PORT = 8080;
export const TEST_FUNCTION_REF_NAME = 'embers-test-function:latest';
const BUSYBOX = '/bin/busybox';

/** The generator's start value for a seed (see the file comment). */
export function seedState(seed: string | number): number {
  const s = String(seed);
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(s)) throw new Error(`seed must match [A-Za-z0-9._-]{1,64}: ${s}`);
  const h = parseInt(createHash('sha256').update(s).digest('hex').slice(0, 13), 16);
  return (h % 2147483646) + 1;
}

/** The bytes /cgi-bin/write?seed=SEED&size=SIZE writes. */
export function expectedBytes(seed: string | number, size: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seedState(seed);
  for (let pos = 0; pos < size; pos += 8) {
    x = (x * 16807) % 2147483647;
    out.write(
      x
        .toString(16)
        .padStart(8, '0')
        .slice(0, Math.min(8, size - pos)),
      pos,
      'latin1',
    );
  }
  return out;
}

export function expectedSha256(seed: string | number, size: number): string {
  return createHash('sha256').update(expectedBytes(seed, size)).digest('hex');
}

/** Alias of expectedSha256 (the name the e2e tests use). */
export const expectedFileSha256 = expectedSha256;

/** The sha256 that an answer of /cgi-bin/write or /cgi-bin/read reports (`<sha256>  <name>`). */
export function reportedSha256(body: string): string {
  return body.trim().split(/\s+/)[0];
}

/** The answer of /cgi-bin/write and /cgi-bin/read for a file written with (seed, size), without the newline. */
export function expectedLine(name: string, seed: string | number, size: number): string {
  return `${expectedSha256(seed, size)}  ${name}`;
}

/** The awk program the guest runs (exported so tests can run it on the host's busybox). */
export const GENERATOR_AWK =
  'BEGIN { x = 0; for (i = 1; i <= 13; i++) x = x * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1; ' +
  'x = x % 2147483646 + 1; full = int(n / 8); s = ""; ' +
  'for (i = 0; i < full; i++) { x = (x * 16807) % 2147483647; s = s sprintf("%08x", x); if (length(s) >= 4096) { printf "%s", s; s = "" } } ' +
  'rem = n - full * 8; if (rem > 0) { x = (x * 16807) % 2147483647; s = s substr(sprintf("%08x", x), 1, rem) } ' +
  'printf "%s", s }';

const CGI_COMMON = `PATH=/bin
export PATH
arg() {
  v="&$QUERY_STRING&"
  case "$v" in *"&$1="*) ;; *) return 0 ;; esac
  v=\${v#*&$1=}
  printf '%s' "\${v%%&*}"
}
reply() {
  printf 'HTTP/1.1 %s\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\n\\r\\n%s\\n' "$1" "$2"
  exit 0
}
check_name() {
  case "$1" in ''|.*|*[!A-Za-z0-9._-]*) reply '400 Bad Request' "bad name" ;; esac
}
`;

const WRITE_CGI = `#!/bin/sh
# GET /cgi-bin/write?name=NAME&size=BYTES&seed=SEED&sync=0|1
${CGI_COMMON}name=$(arg name)
size=$(arg size)
seed=$(arg seed)
sync=$(arg sync)
check_name "$name"
case "$size" in ''|*[!0-9]*) reply '400 Bad Request' "bad size" ;; esac
case "$seed" in ''|*[!A-Za-z0-9._-]*) reply '400 Bad Request' "bad seed" ;; esac
[ \${#seed} -le 64 ] || reply '400 Bad Request' "bad seed"
h=$(printf '%s' "$seed" | busybox sha256sum)
busybox awk -v h="$h" -v n="$size" '${GENERATOR_AWK}' > "/data/$name" || reply '500 Internal Server Error' "write failed"
if [ "$sync" = 1 ]; then busybox sync; fi
cd /data || reply '500 Internal Server Error' "no /data"
reply '200 OK' "$(busybox sha256sum "$name")"
`;

const READ_CGI = `#!/bin/sh
# GET /cgi-bin/read?name=NAME
${CGI_COMMON}name=$(arg name)
check_name "$name"
[ -f "/data/$name" ] || reply '404 Not Found' "missing $name"
cd /data || reply '500 Internal Server Error' "no /data"
reply '200 OK' "$(busybox sha256sum "$name")"
`;

const FILES_CGI = `#!/bin/sh
# GET /cgi-bin/files
${CGI_COMMON}cd /data || reply '500 Internal Server Error' "no /data"
printf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\n\\r\\n'
for f in *; do
  [ -f "$f" ] || continue
  busybox sha256sum "$f"
done
`;

const RENAME_CGI = `#!/bin/sh
# GET /cgi-bin/rename?from=A&to=B&sync=0|1
${CGI_COMMON}from=$(arg from)
to=$(arg to)
check_name "$from"
check_name "$to"
[ -f "/data/$from" ] || reply '404 Not Found' "missing $from"
busybox mv -f "/data/$from" "/data/$to" || reply '500 Internal Server Error' "rename failed"
if [ "$(arg sync)" = 1 ]; then busybox sync; fi
cd /data || reply '500 Internal Server Error' "no /data"
reply '200 OK' "$(busybox sha256sum "$to")"
`;

const DELETE_CGI = `#!/bin/sh
# GET /cgi-bin/delete?name=NAME&sync=0|1
${CGI_COMMON}name=$(arg name)
check_name "$name"
[ -f "/data/$name" ] || reply '404 Not Found' "missing $name"
busybox rm -f "/data/$name" || reply '500 Internal Server Error' "delete failed"
if [ "$(arg sync)" = 1 ]; then busybox sync; fi
reply '200 OK' "deleted $name"
`;

const DROPCACHES_CGI = `#!/bin/sh
# GET /cgi-bin/dropcaches
${CGI_COMMON}busybox sync
echo 3 > /proc/sys/vm/drop_caches || reply '500 Internal Server Error' "cannot drop caches"
reply '200 OK' "dropped"
`;

/** Applets linked in /bin besides sh (the CGI scripts call `busybox <applet>` anyway). */
const APPLETS = ['awk', 'cat', 'echo', 'head', 'httpd', 'ls', 'mkdir', 'ps', 'rm', 'sha256sum', 'sleep', 'sync', 'wc'];

function isStaticElf(bin: Buffer): boolean {
  if (bin.length < 64 || bin.readUInt32BE(0) !== 0x7f454c46 || bin[4] !== 2) return false;
  const phoff = Number(bin.readBigUInt64LE(0x20));
  const phentsize = bin.readUInt16LE(0x36);
  const phnum = bin.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (bin.readUInt32LE(phoff + i * phentsize) === 3) return false; // PT_INTERP
  return true;
}

async function loadBusybox(): Promise<Buffer> {
  let bin: Buffer | undefined;
  try {
    bin = await readFile(BUSYBOX);
  } catch {
    const r = spawnSync('apt-get', ['install', '-y', '-q', 'busybox-static'], {
      stdio: 'pipe',
      env: childEnvironment({ DEBIAN_FRONTEND: 'noninteractive' }),
    });
    if (r.status !== 0)
      throw new Error(`${BUSYBOX} is missing and apt-get install busybox-static failed: ${r.stderr?.toString()}`);
    bin = await readFile(BUSYBOX);
  }
  if (!isStaticElf(bin)) throw new Error(`${BUSYBOX} is not statically linked: install Debian's busybox-static`);
  return bin;
}

/** The image definition (two layers: busybox base, then the web app). */
export async function testFunctionImage(opts: { port?: number } = {}): Promise<FixtureImage> {
  const port = opts.port ?? TEST_FUNCTION_PORT;
  const busybox = await loadBusybox();
  const base: LayerEntry[] = [
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'bin/busybox', type: 'file', mode: 0o755, content: busybox },
    { path: 'bin/sh', type: 'symlink', linkname: 'busybox' },
    ...APPLETS.map((a): LayerEntry => ({ path: `bin/${a}`, type: 'symlink', linkname: 'busybox' })),
    { path: 'etc', type: 'dir', mode: 0o755 },
    { path: 'etc/passwd', type: 'file', mode: 0o644, content: 'root:x:0:0:root:/root:/bin/sh\n' },
    { path: 'etc/group', type: 'file', mode: 0o644, content: 'root:x:0:\n' },
    { path: 'root', type: 'dir', mode: 0o700 },
    { path: 'tmp', type: 'dir', mode: 0o1777 },
    { path: 'data', type: 'dir', mode: 0o755 },
  ];
  const app: LayerEntry[] = [
    { path: 'www', type: 'dir', mode: 0o755 },
    { path: 'www/index.html', type: 'file', mode: 0o644, content: 'hello from embers\n' },
    { path: 'www/cgi-bin', type: 'dir', mode: 0o755 },
    { path: 'www/cgi-bin/write', type: 'file', mode: 0o755, content: WRITE_CGI },
    { path: 'www/cgi-bin/read', type: 'file', mode: 0o755, content: READ_CGI },
    { path: 'www/cgi-bin/files', type: 'file', mode: 0o755, content: FILES_CGI },
    { path: 'www/cgi-bin/rename', type: 'file', mode: 0o755, content: RENAME_CGI },
    { path: 'www/cgi-bin/delete', type: 'file', mode: 0o755, content: DELETE_CGI },
    { path: 'www/cgi-bin/dropcaches', type: 'file', mode: 0o755, content: DROPCACHES_CGI },
  ];
  return {
    layers: [{ entries: base.map((e) => ({ mtime: FIXTURE_MTIME, ...e })) }, { entries: app }],
    config: {
      Entrypoint: ['/bin/busybox', 'httpd', '-f', '-v', '-p', String(port), '-h', '/www'],
      Env: ['PATH=/bin'],
      WorkingDir: '/',
      ExposedPorts: [`${port}/tcp`],
    },
  };
}

/**
 * Writes the test function as an OCI layout in `dir` (tagged embers-test-function:latest) and
 * returns the reference to pass to ImageStore.ensure (the directory). Deterministic: the same
 * busybox binary gives the same manifest digest.
 */
export async function buildTestFunctionImage(dir: string, opts: { port?: number } = {}): Promise<string> {
  await writeOciLayout(dir, await testFunctionImage(opts), { refName: TEST_FUNCTION_REF_NAME });
  return dir;
}
