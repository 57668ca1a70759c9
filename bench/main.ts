/**
 * Benchmarks: `npm run bench -- NAME [options]`. Each prints ratios measured side by side in
 * one run, plus the absolute figures for context (and, with --json, one JSON object last).
 * Timings never live in tests: this machine is shared and noisy.
 */
import { benchDiskDiff } from './disk-diff.js';
import { benchFailures } from './failures.js';
import { benchImage } from './image.js';
import { benchReapPager } from './reap-pager.js';
import { benchReap } from './reap.js';
import { benchRestore } from './restore.js';
import { benchRemote } from './remote.js';
import { benchServe } from './serve.js';

const BENCHES: Record<string, { about: string; run: (args: string[]) => Promise<Record<string, unknown>> }> = {
  'disk-diff': {
    about: 'block delta vs rsync batch: capture time, apply time, patch bytes, for several change sizes',
    run: benchDiskDiff,
  },
  failures: {
    about: 'time until a clear error when a store is wrong or gone (S3 auth, S3 down, registry down) vs a healthy call',
    run: benchFailures,
  },
  image: {
    about:
      'pull + flatten of a multi-layer image from a loopback registry: cold vs warm cache, MB/s, vs flattening the local layout',
    run: benchImage,
  },
  'reap-pager': {
    about:
      'Firecracker page server on the harness: lazy vs working-set prefetch with a cold page cache; remote start: whole memory file vs working set first',
    run: benchReapPager,
  },
  remote: {
    about: 'local vs remote (S3) restore to first response; snapshot download throughput vs a plain S3 GET',
    run: benchRemote,
  },
  serve: {
    about:
      'through the daemon: cold start restore vs boot to first byte; warm latency via the proxy vs direct; burst of N: fan-out vs N parallel boots',
    run: benchServe,
  },
  reap: {
    about:
      'REAP working sets on the test function: (a) QEMU restore to first response, memory file evicted, plain vs working-set prefetch; (b) page server lazy vs prefetch and (c) remote start, whole file vs working set first, on the same snapshot and its recorded working set; working set vs memory size',
    run: benchReap,
  },
  restore: {
    about:
      'cold boot vs snapshot restore to first response; 1 vs N concurrent clones; pool on vs off; memory per extra clone',
    run: benchRestore,
  },
};

async function main(): Promise<number> {
  const [name, ...args] = process.argv.slice(2);
  const bench = name ? BENCHES[name] : undefined;
  if (!bench) {
    process.stderr.write(
      `usage: npm run bench -- NAME [--json]\n\n${Object.entries(BENCHES)
        .map(([n, b]) => `  ${n.padEnd(10)} ${b.about}`)
        .join('\n')}\n`,
    );
    return 64;
  }
  const result = await bench.run(args);
  if (args.includes('--json')) process.stdout.write(`${JSON.stringify(result)}\n`);
  return 0;
}

process.exitCode = await main();
