/**
 * Addresses and names of network slots. Every slot looks the same from inside (tap name,
 * guest IP, guest and gateway MACs), so a snapshot restores into any slot; what differs per
 * slot is only what the host sees: the netns name, the host-side veth and the clone IP.
 *
 * Ranges (all inside the project's own namespaces and host-side veths; nothing routes off
 * this machine): node k (0..31) of this machine, slot i (0..16383):
 *   link /30:  10.(160+k).(i>>6).((i&63)*4)  host veth .1, namespace veth .2
 *   clone IP:  10.(192+k).(i>>8).(i&255)
 */

/** The inside of every slot: identical everywhere, so snapshots carry it unchanged. */
export const GUEST_NET = {
  tapName: 'tap0',
  guestIp: '172.16.0.2',
  gatewayIp: '172.16.0.1',
  prefixLen: 30,
  guestMac: '06:00:ac:10:00:02',
  gatewayMac: '06:00:ac:10:00:01',
  nsVethName: 'veth0',
} as const;

export const MAX_NODES = 32;
export const MAX_SLOTS = 16384;

export interface SlotAddressing {
  index: number;
  netns: string;
  hostVeth: string;
  hostIp: string;
  nsIp: string;
  cloneIp: string;
}

export function slotAddressing(node: number, index: number): SlotAddressing {
  if (!Number.isInteger(node) || node < 0 || node >= MAX_NODES)
    throw new RangeError(`node index ${node} out of range 0..${MAX_NODES - 1}`);
  if (!Number.isInteger(index) || index < 0 || index >= MAX_SLOTS)
    throw new RangeError(`slot index ${index} out of range 0..${MAX_SLOTS - 1}`);
  const linkBase = `10.${160 + node}.${index >> 6}.${(index & 63) * 4}`;
  const parts = linkBase.split('.').map(Number);
  const last = parts[3];
  const prefix = parts.slice(0, 3).join('.');
  return {
    index,
    netns: `${netnsPrefix(node)}${index}`,
    hostVeth: `${vethPrefix(node)}${index}`,
    hostIp: `${prefix}.${last + 1}`,
    nsIp: `${prefix}.${last + 2}`,
    cloneIp: `10.${192 + node}.${index >> 8}.${index & 255}`,
  };
}

/** netns names of node k: `embers-k<k>-s<i>`. */
export function netnsPrefix(node: number): string {
  return `embers-k${node}-s`;
}

/** Host veth names of node k: `emk<k>s<i>` (at most 11 characters, under IFNAMSIZ). */
export function vethPrefix(node: number): string {
  return `emk${node}s`;
}
