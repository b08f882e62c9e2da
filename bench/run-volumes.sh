#!/usr/bin/env bash
# Time from `vmshare run` to CMD start and to exit, with 0, 1, 5, 10 and 20
# volumes, and the peak memory of the vmshare process (which hosts the NFS
# server; QEMU is a separate process and not counted).
#
#   bench/run-volumes.sh [REPEATS]      (default 3; medians are printed)
#   VMSHARE=path/to/vmshare bench/run-volumes.sh
#
# Times come from `vmshare run --verbose`'s own timeline ("command started",
# "exit status"), so they include planning, the server, QEMU start, the
# guest boot and every mount. Under TCG the boot dominates and varies by
# half a second between runs, so the guest's own measure of the time spent
# mounting (all volumes together) is printed too: that is what volumes cost.
set -euo pipefail

repeats=${1:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=$(cd "$root" && realpath -m "${CARGO_TARGET_DIR:-target}")
vmshare=${VMSHARE:-$target_dir/x86_64-unknown-linux-gnu/release/vmshare}
if [ ! -x "$vmshare" ]; then
    (cd "$root" && cargo build --release -p vmshare >&2)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export VMSHARE_STATE_DIR=${VMSHARE_STATE_DIR:-$work/state}

# The time of the first timeline line containing $1 ("[   5.258s] text").
stamp() { sed -n "s/^\[ *\([0-9.]*\)s\] .*$1.*/\1/p" "$work/log" | head -n 1; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Warm the asset cache and the KVM probe so they are not timed.
"$vmshare" run -- true

printf '%-8s %12s %12s %16s %18s\n' volumes "to CMD (s)" "to exit (s)" "all mounts (ms)" "vmshare peak(MiB)"
for n in 0 1 5 10 20; do
    args=()
    for i in $(seq 1 "$n"); do
        mkdir -p "$work/vol$i"
        echo "$i" > "$work/vol$i/file"
        args+=(-v "$work/vol$i:/vol/$i")
    done
    starts=(); exits=(); rss=(); mounts=()
    for _ in $(seq 1 "$repeats"); do
        "$vmshare" run --verbose "${args[@]}" -- cat /dev/null 2> "$work/log" &
        pid=$!
        peak=0
        while kill -0 "$pid" 2>/dev/null; do
            kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ -n "$kb" ] && [ "$kb" -gt "$peak" ] && peak=$kb
            sleep 0.05
        done
        wait "$pid"
        starts+=("$(stamp 'command started')")
        exits+=("$(stamp 'exit status')")
        rss+=("$peak")
        # The guest reports each mount's duration: "mounted X on Y (12 ms)".
        mounts+=("$(sed -n 's/.*mounted .* (\([0-9]*\) ms)$/\1/p' "$work/log" | awk '{t += $1} END {print t + 0}')")
    done
    s=$(printf '%s\n' "${starts[@]}" | median)
    e=$(printf '%s\n' "${exits[@]}" | median)
    r=$(printf '%s\n' "${rss[@]}" | median)
    m=$(printf '%s\n' "${mounts[@]}" | median)
    printf '%-8s %12s %12s %16s %18s\n' "$n" "$s" "$e" "$m" "$(awk -v k="$r" 'BEGIN {printf "%.1f", k / 1024}')"
done
