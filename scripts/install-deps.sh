#!/usr/bin/env bash
# Installs what vmshare needs on a Debian 12 host, from Debian's packages:
#   qemu-system-x86   the default VMM (QEMU -M microvm; KVM when it works, TCG otherwise)
#   linux-image-amd64 the default guest kernel and its modules
#   busybox-static    the default guest rootfs
#   e2fsprogs erofs-utils  block-device volume images (vmshare image build)
#   iproute2          --net tap (network namespaces, TAP devices)
#   libnfs-utils      a second, user-space NFS client used by the tests
#   nfs-common rpcbind  showmount and rpcinfo: stock RPC tools the tests point at the server
#   git python3       real programs the tests run in a guest, from the host's /usr
# With --bench it also installs the peers the benchmarks compare against.
set -euo pipefail
pkgs=(qemu-system-x86 linux-image-amd64 busybox-static e2fsprogs erofs-utils iproute2 libnfs-utils nfs-common rpcbind git python3 ca-certificates)
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(nfs-ganesha nfs-ganesha-vfs)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
