#!/usr/bin/env bash
# A signup flood beside a reader, against the real `tenancy serve` (see signup_flood.py).
#
#   bash bench/signup_flood.sh [CLIENTS] [SIGNUPS_PER_CLIENT]     (default 32 x 200)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tenancy-cli
exec python3 bench/signup_flood.py "$PWD/target/release/tenancy" "${1:-32}" "${2:-200}"
