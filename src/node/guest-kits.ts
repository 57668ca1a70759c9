import { ensureGuestKit, type GuestKit, type GuestKitKind } from '../guest/kit.js';

/**
 * The guest kits (kernel + base initramfs) a node boots and restores with: built once per
 * kind, cached outside the home, then kept in memory for the life of the node.
 */
export class GuestKits {
  private readonly kits = new Map<GuestKitKind, GuestKit>();

  constructor(
    private readonly opts: {
      /** Where kits are built and cached (shared by all homes on a machine). */
      cacheDir: string;
      /** The kind `get()` gives without an argument (--guest-kernel). */
      defaultKind: GuestKitKind;
      onProgress?: (msg: string) => void;
    },
  ) {}

  get defaultKind(): GuestKitKind {
    return this.opts.defaultKind;
  }

  async get(kind: GuestKitKind = this.opts.defaultKind): Promise<GuestKit> {
    let kit = this.kits.get(kind);
    if (!kit) {
      kit = await ensureGuestKit({ cacheDir: this.opts.cacheDir, kind, onProgress: this.opts.onProgress });
      this.kits.set(kind, kit);
    }
    return kit;
  }
}
