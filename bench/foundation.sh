#!/usr/bin/env bash
# Provisioning and fleet migration on the embedded default (SQLite database-per-tenant),
# through the real `tenancy` binary.
#
#   bash bench/foundation.sh [TENANTS]      (default 1000)
#
# Baseline, measured in the same run: the same migration applied to the same tenant files
# by a bare loop (Python's sqlite3, one file after another, one transaction each) — the
# floor that any fleet migrator on this machine pays. The last line is one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}

cargo build --release -q -p tenancy-cli
BIN=$PWD/target/release/tenancy
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TENANCY_DATA_DIR=$WORK/data TENANCY_MIGRATIONS=$WORK/migrations
unset TENANCY_CONFIG TENANCY_PAUSE_AT
mkdir -p "$WORK/migrations"
cp crates/tenancy/guild-migrations/*.sql "$WORK/migrations/"

now() { date +%s%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e6 }'; }

# One tenant, whole process (start, open catalog, provision, exit).
t0=$(now); "$BIN" tenant create first >/dev/null; t1=$(now)
one_process_ms=$(ms "$t0" "$t1")
# Provisioning alone, as the engine reports it (median of 21 creates).
inner=$(for i in $(seq 1 21); do "$BIN" tenant create "probe-$i" | sed -E 's/.* in ([0-9.]+) ms/\1/'; done | sort -n | sed -n 11p)

# The fleet: N tenants, one `tenancy tenant create` process each.
t0=$(now)
for i in $(seq 1 $((N - 22))); do "$BIN" tenant create "t$i" >/dev/null; done
t1=$(now)
fleet_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
total=$("$BIN" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')

# No-op migrate: every tenant current.
t0=$(now); "$BIN" migrate >/dev/null 2>&1; t1=$(now)
noop_ms=$(ms "$t0" "$t1")

# Add a column and an index to every tenant.
cat > "$WORK/migrations/0003_member_rank.sql" <<'SQL'
ALTER TABLE members ADD COLUMN rank TEXT NOT NULL DEFAULT 'recruit';
CREATE INDEX members_rank_idx ON members (rank);
SQL
t0=$(now); "$BIN" migrate >/dev/null 2>&1; t1=$(now)
migrate_ms=$(ms "$t0" "$t1")

# Baseline: the next migration by a bare sequential loop over the same files.
baseline_ms=$(python3 - "$WORK/data/tenants" <<'PY'
import glob, sqlite3, sys, time
files = sorted(glob.glob(sys.argv[1] + "/*.db"))
start = time.perf_counter()
for f in files:
    c = sqlite3.connect(f, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
    c.execute("BEGIN IMMEDIATE")
    c.execute("ALTER TABLE members ADD COLUMN title TEXT")
    c.execute("CREATE INDEX members_title_idx ON members (title)")
    c.execute("COMMIT"); c.close()
print(f"{(time.perf_counter() - start) * 1000:.2f}")
PY
)
ratio=$(awk -v a="$migrate_ms" -v b="$baseline_ms" 'BEGIN { printf "%.2f", a / b }')

# Bulk provisioning: N more tenants from one file, in one process, 4 at a time, on a
# fresh data folder; compared with the one-process-per-tenant loop above.
seq -f "bulk%06g" 1 "$N" > "$WORK/bulk.txt"
t0=$(now); TENANCY_DATA_DIR=$WORK/bulk "$BIN" tenant create --bulk "$WORK/bulk.txt" --concurrency 4 >/dev/null; t1=$(now)
bulk_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
bulk_ratio=$(awk -v a="$bulk_s" -v b="$fleet_s" -v n="$N" -v m="$((N - 22))" 'BEGIN { printf "%.3f", (a / n) / (b / m) }')

echo "tenants:                         $total"
echo "provision one tenant (engine):   ${inner} ms (median of 21)"
echo "provision one tenant (process):  ${one_process_ms} ms (whole tenancy process)"
echo "create $((N - 22)) tenants, one process each: ${fleet_s} s"
echo "create $N tenants with --bulk:   ${bulk_s} s (per tenant, ratio to one process each: ${bulk_ratio})"
echo "no-op migrate over $total:       ${noop_ms} ms"
echo "add column + index over $total:  ${migrate_ms} ms (tenancy migrate, whole process)"
echo "baseline, bare sequential loop:  ${baseline_ms} ms"
echo "ratio tenancy / baseline:        ${ratio}"
printf '{"bench":"foundation","tenants":%s,"provision_one_ms":%s,"provision_one_process_ms":%s,"bulk_create_s":%s,"bulk_vs_process_each":%s,"noop_migrate_ms":%s,"add_column_migrate_ms":%s,"baseline_loop_ms":%s,"ratio_vs_baseline":%s}\n' \
  "$total" "$inner" "$one_process_ms" "$bulk_s" "$bulk_ratio" "$noop_ms" "$migrate_ms" "$baseline_ms" "$ratio"
