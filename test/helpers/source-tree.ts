import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * Writes `files` (relative path → text) into a fresh temporary directory, runs `command args`
 * there and removes the directory: for tests that run a lint script over small made-up trees.
 */
export async function runOverTree(
  prefix: string,
  files: Record<string, string>,
  command: string,
  args: string[],
): Promise<{ status: number | null; output: string }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  try {
    for (const [path, text] of Object.entries(files)) {
      await mkdir(dirname(join(dir, path)), { recursive: true });
      await writeFile(join(dir, path), text);
    }
    const r = spawnSync(command, args, { cwd: dir, encoding: 'utf8' });
    return { status: r.status, output: `${r.stdout}${r.stderr}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
