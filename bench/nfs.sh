#!/usr/bin/env bash
# vmshare's NFSv3 server and nfs-ganesha side by side on 127.0.0.1.
#
# Builds vmshare and vmshare-bench in release mode and runs the benchmark;
# extra arguments go to vmshare-bench (see `vmshare-bench --help`). It
# installs nothing: ganesha needs the Debian packages nfs-ganesha,
# nfs-ganesha-vfs and rpcbind, and it runs as root (the VFS backend opens
# files by handle). Takes well under a minute here; the binary stops
# everything itself after 540 s at most. Details: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ganesha.nfsd >/dev/null || missing+=(nfs-ganesha nfs-ganesha-vfs)
command -v rpcbind >/dev/null || [ -x /usr/sbin/rpcbind ] || missing+=(rpcbind)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/nfs.sh: missing ${missing[*]}: apt-get install ${missing[*]}" >&2
    echo "bench/nfs.sh: (or pass --only vmshare)" >&2
    [[ " $* " == *" --only vmshare "* ]] || exit 1
fi
if [ "$(id -u)" != 0 ] && [[ " $* " != *" --only vmshare "* ]]; then
    echo "bench/nfs.sh: ganesha's VFS backend needs root" >&2
    exit 1
fi

cargo build --release -p vmshare -p vmshare-bench
exec "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/vmshare-bench" "$@"
