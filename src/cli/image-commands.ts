/** embers image pull|ls|inspect|rm|gc: the image cache. */
import { EmbersError } from '../errors.js';
import { EmbersNode } from '../node/node.js';
import {
  formatGcResult,
  formatImageInspect,
  formatImageList,
  formatRemoveResult,
  pullProgressDisplay,
} from '../image/index.js';
import { parse } from './args.js';
import { nodeOptions } from './node-options.js';
import type { Output } from './output.js';

export async function imageCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, {});
  const [sub, ref] = positionals;
  const need = () => {
    if (!ref) throw EmbersError.of('EMB_USAGE', { usage: `embers image ${sub} <reference>` });
    return ref;
  };
  const node = await EmbersNode.open(nodeOptions(values, out));
  const images = node.images;
  switch (sub) {
    case 'pull': {
      const info = await images.pull(need(), { onProgress: pullProgressDisplay(process.stderr) });
      out.result(formatImageInspect(info), info);
      return 0;
    }
    case 'ls': {
      const list = await images.listImages();
      out.result(formatImageList(list), { images: list });
      return 0;
    }
    case 'inspect': {
      const info = await images.inspect(need());
      out.result(formatImageInspect(info), info);
      return 0;
    }
    case 'rm': {
      const r = await images.remove(need(), { inUse: await node.imageDigestsInUse() });
      out.result(formatRemoveResult(r), r);
      return 0;
    }
    case 'gc': {
      const r = await images.gc(() => node.imageDigestsInUse());
      out.result(formatGcResult(r), r);
      return 0;
    }
    default:
      throw EmbersError.of('EMB_USAGE', { usage: 'embers image pull|ls|inspect|rm|gc' });
  }
}
