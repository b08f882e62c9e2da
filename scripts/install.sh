#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: system packages, a release
# build of the static vmshare binary, installed as /usr/local/bin/vmshare.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh "$@"
cargo build --release -p vmshare
# Where cargo put it: a CARGO_TARGET_DIR in the environment moves it.
install -m 0755 "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/vmshare" /usr/local/bin/vmshare
echo "installed /usr/local/bin/vmshare ($(vmshare --version))"
