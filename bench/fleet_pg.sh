#!/usr/bin/env bash
# Fleet provisioning and migration on PostgreSQL, through the real `tenancy` binary with
# its catalog on PostgreSQL: bulk creation in the schema, shared and database modes, a
# no-op migrate, and an add-column + index migration over every schema tenant.
#
#   bash bench/fleet_pg.sh [SCHEMA_TENANTS] [SHARED_TENANTS] [DATABASE_TENANTS]
#                                          (defaults 1000, 100000, 100)
#
# Baselines, measured in the same run:
#   - provisioning: the same number of SQLite tenants created with --bulk (the embedded
#     default), per tenant;
#   - migration: the same kind of ALTER TABLE + CREATE INDEX sent by one psql session to
#     every schema in turn, one transaction each, with no ledger and no catalog — the
#     floor any schema-per-tenant migrator pays on this server.
# Creates its own databases (prefix fleet_<hex>) on TENANCY_BENCH_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) and drops them at the end. The last line is
# one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMA_N=${1:-1000}
SHARED_N=${2:-100000}
DATABASE_N=${3:-100}
SERVER=${TENANCY_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}

[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p tenancy-cli
BIN=$PWD/target/release/tenancy
WORK=$(mktemp -d)
PREFIX=fleet_$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
psql_server() { psql "$SERVER" -qAtX -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
  for db in $(psql_server -c "SELECT datname FROM pg_database WHERE datname LIKE '${PREFIX}%'"); do
    psql_server -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null || true
  done
  psql_server -c "DROP ROLE IF EXISTS ${PREFIX}_data" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql_server -c "CREATE DATABASE ${PREFIX}_catalog" -c "CREATE DATABASE ${PREFIX}_store"
base=${SERVER%/*}
export TENANCY_DATA_DIR=$WORK/data TENANCY_MIGRATIONS=$WORK/migrations \
  TENANCY_CATALOG_URL=$base/${PREFIX}_catalog TENANCY_STORE_URL=$base/${PREFIX}_store \
  TENANCY_STORE_NAME=pg TENANCY_STORE_DATA_ROLE=${PREFIX}_data \
  TENANCY_STORE_DATABASE_PREFIX=${PREFIX}_t
unset TENANCY_CONFIG TENANCY_PAUSE_AT TENANCY_DEFAULT_STORE TENANCY_DEFAULT_MODE
mkdir -p "$WORK/migrations"
cp examples/guild/migrations/*.sql "$WORK/migrations/"

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
bulk() { # file slug-prefix count, then tenancy options
  local file=$WORK/$1.txt; seq -f "$2%06g" 1 "$3" > "$file"; shift 3
  local t0; t0=$(now)
  "$BIN" tenant create --bulk "$file" "$@" >/dev/null
  secs "$t0" "$(now)"
}

# Baseline for provisioning: SQLite tenants, the embedded default, same command.
sqlite_s=$(TENANCY_CATALOG_URL= TENANCY_STORE_URL= TENANCY_DATA_DIR=$WORK/sqlite bulk sqlite s "$SCHEMA_N")
schema_s=$(bulk schema sc "$SCHEMA_N" --mode schema --store pg)

# Add a column and an index to every schema tenant.
cat > "$WORK/migrations/0003_member_rank.sql" <<'SQL'
ALTER TABLE members ADD COLUMN rank TEXT NOT NULL DEFAULT 'recruit';
CREATE INDEX members_rank_idx ON members (rank);
SQL
t0=$(now); "$BIN" migrate --json > "$WORK/migrate.json" 2>/dev/null; migrate_s=$(secs "$t0" "$(now)")
migrated=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["migrated"], "migrated,", len(r["failed"]), "failed")' "$WORK/migrate.json")

# Baseline for migration: the next such change over the same schemas by one bare psql
# session, one transaction per schema, nothing else.
schemas=$(psql "$base/${PREFIX}_store" -qAtX -c "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%' ORDER BY 1")
nschemas=$(echo "$schemas" | grep -c . || true)
t0=$(now)
for s in $schemas; do
  printf 'BEGIN; SET LOCAL search_path = "%s"; ALTER TABLE members ADD COLUMN title TEXT; CREATE INDEX members_title_idx ON members (title); COMMIT;\n' "$s"
done | psql "$base/${PREFIX}_store" -qX -v ON_ERROR_STOP=1 >/dev/null
baseline_s=$(secs "$t0" "$(now)")

# The rest of the fleet: shared tenants, then databases copied from the template.
shared_s=$(bulk shared sh "$SHARED_N" --mode shared --store pg)
database_s=$(bulk database db "$DATABASE_N" --mode database --store pg)
total=$("$BIN" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')

# No-op migrate: every tenant current, decided from the catalog alone.
t0=$(now); "$BIN" migrate >/dev/null 2>&1; noop_s=$(secs "$t0" "$(now)")

# One more change over the whole fleet: schemas and databases one by one, the shared
# tables once and their tenants moved in the catalog in batches.
cat > "$WORK/migrations/0004_raid_note.sql" <<'SQL'
ALTER TABLE raids ADD COLUMN note TEXT;
SQL
t0=$(now); "$BIN" migrate --json > "$WORK/fleet.json" 2>/dev/null; fleet_s=$(secs "$t0" "$(now)")
fleet=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["migrated"], "migrated,", len(r["failed"]), "failed")' "$WORK/fleet.json")

echo "baseline: $SCHEMA_N SQLite tenants with --bulk:    ${sqlite_s} s"
echo "$SCHEMA_N schema tenants with --bulk:              ${schema_s} s (ratio to SQLite: $(div "$schema_s" "$sqlite_s"))"
echo "add column + index over $SCHEMA_N schemas:         ${migrate_s} s ($migrated)"
echo "baseline: bare psql over $nschemas schemas:       ${baseline_s} s (ratio tenancy / baseline: $(div "$migrate_s" "$baseline_s"))"
echo "$SHARED_N shared tenants with --bulk:            ${shared_s} s ($(div "$SHARED_N" "$shared_s") tenants/s)"
echo "$DATABASE_N database tenants with --bulk:           ${database_s} s ($(div "$database_s" "$DATABASE_N") s each)"
echo "no-op migrate over $total tenants:        ${noop_s} s"
echo "add a column over all $total tenants:     ${fleet_s} s ($fleet)"
printf '{"bench":"fleet_pg","schema_tenants":%s,"shared_tenants":%s,"database_tenants":%s,"sqlite_bulk_s":%s,"schema_bulk_s":%s,"schema_vs_sqlite":%s,"schema_add_column_s":%s,"baseline_psql_s":%s,"ratio_vs_baseline":%s,"shared_bulk_s":%s,"database_bulk_s":%s,"noop_migrate_s":%s,"fleet_add_column_s":%s}\n' \
  "$SCHEMA_N" "$SHARED_N" "$DATABASE_N" "$sqlite_s" "$schema_s" "$(div "$schema_s" "$sqlite_s")" "$migrate_s" "$baseline_s" "$(div "$migrate_s" "$baseline_s")" "$shared_s" "$database_s" "$noop_s" "$fleet_s"
