/** The top-level help (`embers --help`); each command's own help is in commands.ts. */
export const USAGE = `embers — serverless functions as microVMs, with snapshot restores

usage: embers [global options] <command> [options]     (embers <command> --help explains one)

  run <image> [--name N] [--vcpus 1] [--memory 256] [--port 8080] [--env K=V]... [--ready-timeout 60s]
                          boot a function microVM from an image and wait until it answers
  invoke <instance> [--path /] [--data TEXT] [--method GET]
                          one HTTP request to the function
  ps                      list instances
  logs <instance>         the guest console
  stop <instance> | --all stop instances and release what they hold
  down                    stop everything and tear down this node's network pool
  snapshot create <instance> [--disk-diff block|rsync] [--stop]
                          pause, snapshot (state, memory, disk delta), resume (or stop)
  snapshot restore <id> [--count N] [--name N]... [--from-peer URL] [--allow-host-mismatch]
                          restore N clones concurrently; each answers before this returns;
                          refused on a host whose CPU, VMM major version or guest kernel
                          differs from the snapshot's, unless --allow-host-mismatch
  snapshot record-ws <id> [--path PATH]
                          record its working set (REAP, QEMU): the pages a restored clone
                          reads to answer its first request; restores then prefetch them
                          (snapshot restore --prefetch auto|on|off, default auto)
  snapshot ls [--remote] | inspect <id> [--verify] | rm <id>
  snapshot push <id>      upload a snapshot to the S3-compatible store
  snapshot pull <id> [--from-peer URL]
                          download a snapshot from the store (or a peer node), verified
  serve [--listen 127.0.0.1] [--port 7070] [--peer URL]... [--drain-timeout 30s]
                          the node daemon: functions with automatic snapshots, the HTTP
                          API (/openapi.json), /metrics, and this node's snapshots for peers
                          (API token: EMBERS_API_TOKEN, required off loopback; peer token:
                          EMBERS_PEER_TOKEN or --peer-token); cold starts also restore
                          snapshots the --peer nodes made
  fn deploy <name> <image> [--memory 256] … | ls | inspect <name> | rm <name> | invoke <name> [--path /] [--data TEXT]
                          clients of the daemon (EMBERS_API, default http://127.0.0.1:7070);
                          see: embers fn --help
  image pull <ref>        pull from a registry (or read a local OCI layout / docker save
                          archive), verify every blob, flatten to a deterministic rootfs
  image ls | inspect <ref> | rm <ref> | gc
  guest build             build (or find cached) the guest kernel and initramfs
  guest build-kernel      build a kernel from Debian's linux-source with Firecracker's guest config
  demo [--clones N]       boot the test function, call it and show the timings
  doctor                  what this host has: accelerator, hypervisors, tools

global options (before or after the command):
  --home DIR              the node's data directory (EMBERS_HOME, default /var/lib/embers)
  --accel auto|kvm|tcg    accelerator (default auto: KVM only when hardware-backed)
  --vmm auto|qemu|firecracker
                          hypervisor (default auto: Firecracker where its binary and
                          hardware KVM exist, else QEMU); see: embers doctor
  --firecracker-bin PATH  the Firecracker binary (EMBERS_FIRECRACKER_BIN)
  --fc-jailer-uid N [--fc-jailer-gid N] [--fc-jailer-bin PATH] [--fc-chroot-base DIR]
  [--fc-cgroup KEY=VALUE]... [--fc-parent-cgroup NAME]
                          run Firecracker through the jailer as uid/gid N (EMBERS_FC_JAILER_*;
                          default: no jailer, a private mount namespace per VM; chroot base
                          /srv/jailer, gid = uid)
  --fc-vsock-cid N        a vsock device with guest CID N in every VM (EMBERS_FC_VSOCK_CID;
                          default 3: the guest agent is reached over it)
  --fc-diff-snapshots     track dirty pages for Diff snapshots (EMBERS_FC_DIFF_SNAPSHOTS=1)
  --guest-kernel debian|firecracker-config
                          the guest kernel (default debian; firecracker-config is built
                          by: embers guest build-kernel)
  --net-pool-size N       free network slots kept ready (default 10)
  --qemu-cpu MODEL        the CPU QEMU guests see (default host under KVM, max under TCG);
                          for snapshots that move between KVM hosts, the oldest model all
                          of them have (e.g. Skylake-Client-v4); restores need the same
  --device-discovery acpi|cmdline
                          how QEMU guests find their devices (default acpi; cmdline: no
                          ACPI, no RTC, virtio_mmio.device= on the kernel command line)
  --snapshots disabled|local|remote
                          snapshot mode (default local; remote when EMBERS_S3_* is set):
                          remote uploads after create and downloads before restore
  --cache-snapshots on|off
                          keep downloaded snapshots (default on)
  --s3-endpoint URL --s3-bucket B [--s3-region R] [--s3-prefix P]
                          the S3-compatible store (or EMBERS_S3_*; credentials only from
                          EMBERS_S3_ACCESS_KEY_ID and EMBERS_S3_SECRET_ACCESS_KEY)
  --json                  print one JSON object as the last line
`;
