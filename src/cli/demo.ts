import type { NodeOptions } from '../node/node.js';
import type { Output } from './output.js';
export async function runDemo(_opts: NodeOptions, _out: Output, _o: { clones: number }): Promise<number> {
  return 70;
}
