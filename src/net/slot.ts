import { run } from '../util/exec.js';
import { EmbersError } from '../errors.js';
import { GUEST_NET, type SlotAddressing } from './addressing.js';

/**
 * One network slot: a netns holding the guest's tap (same name, IP and MACs in every slot),
 * a veth pair to the host, and nftables NAT inside the netns mapping the slot's clone IP
 * to the guest IP — Firecracker's network-for-clones design. The netns has no default
 * route, so a guest can reach the host side of its slot and nothing else.
 */
export async function createSlot(a: SlotAddressing): Promise<void> {
  const g = GUEST_NET;
  const script = `set -eu
ip netns add ${a.netns}
ip -n ${a.netns} link set lo up
ip -n ${a.netns} tuntap add dev ${g.tapName} mode tap
ip -n ${a.netns} link set ${g.tapName} address ${g.gatewayMac}
ip -n ${a.netns} addr add ${g.gatewayIp}/${g.prefixLen} dev ${g.tapName}
ip -n ${a.netns} link set ${g.tapName} up
ip link add ${a.hostVeth} type veth peer name ${g.nsVethName} netns ${a.netns}
ip addr add ${a.hostIp}/30 dev ${a.hostVeth}
ip link set ${a.hostVeth} up
ip -n ${a.netns} addr add ${a.nsIp}/30 dev ${g.nsVethName}
ip -n ${a.netns} link set ${g.nsVethName} up
ip route add ${a.cloneIp}/32 via ${a.nsIp} dev ${a.hostVeth}
ip netns exec ${a.netns} sysctl -qw net.ipv4.ip_forward=1
ip netns exec ${a.netns} nft -f - <<'NFT'
table ip embers {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${g.nsVethName}" ip daddr ${a.cloneIp} dnat to ${g.guestIp}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${g.nsVethName}" ip saddr ${g.guestIp} snat to ${a.cloneIp}
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    iifname "${g.nsVethName}" oifname "${g.tapName}" ip daddr ${g.guestIp} accept
    iifname "${g.tapName}" oifname "${g.nsVethName}" ip saddr ${g.guestIp} ip daddr ${a.hostIp} accept
  }
}
NFT
`;
  try {
    await run('sh', ['-c', script], { timeoutMs: 30_000 });
  } catch (err) {
    await destroySlot(a).catch(() => undefined);
    throw EmbersError.of(
      'EMB_NET_SETUP_FAILED',
      { netns: a.netns, reason: (err as Error).message, slot: a },
      { cause: err },
    );
  }
}

/**
 * Removes a slot; idempotent. The host veth goes first and explicitly: deleting a veth end
 * deletes its peer synchronously, whereas a netns teardown frees its devices later, on a
 * kernel work queue — so deleting the netns first leaves the host end visible for a moment,
 * and an `ip link del` can look it up and then lose it to the kernel ("No such device").
 * Then the netns goes, taking the tap and the NAT table; the host route went with the veth.
 */
export async function destroySlot(a: SlotAddressing): Promise<void> {
  await deleteLinkIfPresent(a.hostVeth);
  await run('ip', ['netns', 'del', a.netns], { okCodes: [1] });
}

async function deleteLinkIfPresent(name: string): Promise<void> {
  const { code, stderr } = await run('ip', ['link', 'del', name], { okCodes: [1, 2] });
  if (code !== 0 && !/Cannot find device|No such device/.test(stderr)) {
    throw EmbersError.of('EMB_HOST_COMMAND_FAILED', {
      cmd: 'ip',
      args: ['link', 'del', name],
      exit: code,
      stderr,
    });
  }
}

/** Names of netns that exist on this machine. */
export async function listNetns(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

/** Host links (name only) on this machine. */
export async function listLinks(): Promise<string[]> {
  const { stdout } = await run('ip', ['-o', 'link', 'show']);
  return stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((n): n is string => !!n);
}
