#!/usr/bin/env bash
# Fleet provisioning and migration per isolation mode, through the real `tenancy` binary.
# Each mode gets a fresh setup (catalog on PostgreSQL, one PostgreSQL store; SQLite: the
# embedded default) and, in turn: bulk creation of N tenants, a no-op migrate, and an
# add-column + index migration over all of them.
#
#   bash bench/fleet_pg.sh [SCHEMA_TENANTS] [SHARED_TENANTS] [DATABASE_TENANTS]
#                                          (defaults 1000, 100000, 100)
#
# Baselines, measured in the same run:
#   - the same scenario on SQLite (the embedded default) with SCHEMA_TENANTS tenants;
#   - for the schema migration: the same kind of ALTER TABLE + CREATE INDEX sent by one
#     psql session to every schema in turn, one transaction each, with no ledger and no
#     catalog — the floor any schema-per-tenant migrator pays on this server.
# Creates its own databases (prefix fleet_<hex>) on TENANCY_BENCH_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) and drops them at the end; BENCH_NO_BUILD=1
# skips the release build. The last line is one JSON object.
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
base=${SERVER%/*}
psql_server() { psql "$SERVER" -qAtX -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
  for db in $(psql_server -c "SELECT datname FROM pg_database WHERE datname LIKE '${PREFIX}%'"); do
    psql_server -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null || true
  done
  for mode in schema shared database; do
    psql_server -c "DROP ROLE IF EXISTS ${PREFIX}_${mode}_data" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
unset TENANCY_CONFIG TENANCY_PAUSE_AT TENANCY_DEFAULT_STORE TENANCY_DEFAULT_MODE \
  TENANCY_CATALOG_URL TENANCY_STORE_URL TENANCY_STORE_NAME TENANCY_STORE_DATA_URL \
  TENANCY_STORE_DATA_ROLE TENANCY_STORE_DATABASE_PREFIX

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# scenario MODE N: prints "bulk_s noop_s add_s migrated failed"; leaves the setup in
# $WORK/MODE (environment in $WORK/MODE/env) for the baseline.
scenario() {
  local mode=$1 n=$2 dir=$WORK/$1
  mkdir -p "$dir/migrations"
  cp crates/tenancy/guild-migrations/*.sql "$dir/migrations/"
  {
    echo "export TENANCY_DATA_DIR=$dir/data TENANCY_MIGRATIONS=$dir/migrations"
    if [ "$mode" != sqlite ]; then
      psql_server -c "CREATE DATABASE ${PREFIX}_${mode}_catalog" -c "CREATE DATABASE ${PREFIX}_${mode}_store"
      echo "export TENANCY_CATALOG_URL=$base/${PREFIX}_${mode}_catalog TENANCY_STORE_URL=$base/${PREFIX}_${mode}_store"
      echo "export TENANCY_STORE_NAME=pg TENANCY_STORE_DATA_ROLE=${PREFIX}_${mode}_data"
      echo "export TENANCY_STORE_DATABASE_PREFIX=${PREFIX}_${mode}_t"
      echo "export TENANCY_DEFAULT_STORE=pg TENANCY_DEFAULT_MODE=$mode"
    fi
  } > "$dir/env"
  (
    # shellcheck disable=SC1091
    . "$dir/env"
    seq -f "t%06g" 1 "$n" > "$dir/slugs.txt"
    local t0 bulk noop add
    t0=$(now); "$BIN" tenant create --bulk "$dir/slugs.txt" >/dev/null; bulk=$(secs "$t0" "$(now)")
    t0=$(now); "$BIN" migrate >/dev/null 2>&1; noop=$(secs "$t0" "$(now)")
    printf '%s\n%s\n' \
      "ALTER TABLE members ADD COLUMN rank TEXT NOT NULL DEFAULT 'recruit';" \
      "CREATE INDEX members_rank_idx ON members (rank);" > "$dir/migrations/0003_member_rank.sql"
    t0=$(now); "$BIN" migrate --json > "$dir/migrate.json" 2>/dev/null || true; add=$(secs "$t0" "$(now)")
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], sys.argv[4], r["migrated"], len(r["failed"]))' \
      "$dir/migrate.json" "$bulk" "$noop" "$add"
  )
}

read -r sqlite_bulk sqlite_noop sqlite_add sqlite_ok sqlite_failed < <(scenario sqlite "$SCHEMA_N")
read -r schema_bulk schema_noop schema_add schema_ok schema_failed < <(scenario schema "$SCHEMA_N")
read -r shared_bulk shared_noop shared_add shared_ok shared_failed < <(scenario shared "$SHARED_N")
read -r database_bulk database_noop database_add database_ok database_failed < <(scenario database "$DATABASE_N")
for v in sqlite_failed schema_failed shared_failed database_failed; do
  [ -n "${!v}" ] || { echo "a scenario did not finish ($v); see above" >&2; exit 1; }
done

# Baseline for the schema migration: the next such change over the same schemas by one
# bare psql session, one transaction per schema, nothing else.
store=$base/${PREFIX}_schema_store
schemas=$(psql "$store" -qAtX -c "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%' ORDER BY 1")
nschemas=$(echo "$schemas" | grep -c . || true)
t0=$(now)
for s in $schemas; do
  printf 'BEGIN; SET LOCAL search_path = "%s"; ALTER TABLE members ADD COLUMN title TEXT; CREATE INDEX members_title_idx ON members (title); COMMIT;\n' "$s"
done | psql "$store" -qX -v ON_ERROR_STOP=1 >/dev/null
baseline_s=$(secs "$t0" "$(now)")

row() { printf '%-22s %9s %12s %11s %12s  %s\n' "$@"; }
row "mode" "tenants" "bulk create" "no-op mig." "add column" "migrated / failed"
row "database (SQLite)" "$SCHEMA_N" "${sqlite_bulk} s" "${sqlite_noop} s" "${sqlite_add} s" "$sqlite_ok / $sqlite_failed"
row "schema" "$SCHEMA_N" "${schema_bulk} s" "${schema_noop} s" "${schema_add} s" "$schema_ok / $schema_failed"
row "shared" "$SHARED_N" "${shared_bulk} s" "${shared_noop} s" "${shared_add} s" "$shared_ok / $shared_failed"
row "database (PostgreSQL)" "$DATABASE_N" "${database_bulk} s" "${database_noop} s" "${database_add} s" "$database_ok / $database_failed"
echo
echo "schema bulk creation per tenant / SQLite's:   $(div "$schema_bulk" "$sqlite_bulk")"
echo "shared bulk creation:                         $(div "$SHARED_N" "$shared_bulk") tenants/s"
echo "database bulk creation:                       $(div "$database_bulk" "$DATABASE_N") s per tenant"
echo "baseline: bare psql over $nschemas schemas:        ${baseline_s} s"
echo "schema add column, tenancy / bare psql:       $(div "$schema_add" "$baseline_s")"
printf '{"bench":"fleet_pg","schema_tenants":%s,"shared_tenants":%s,"database_tenants":%s,"sqlite":{"bulk_s":%s,"noop_migrate_s":%s,"add_column_s":%s,"failed":%s},"schema":{"bulk_s":%s,"noop_migrate_s":%s,"add_column_s":%s,"failed":%s},"shared":{"bulk_s":%s,"noop_migrate_s":%s,"add_column_s":%s,"failed":%s},"database":{"bulk_s":%s,"noop_migrate_s":%s,"add_column_s":%s,"failed":%s},"schema_bulk_vs_sqlite":%s,"baseline_psql_s":%s,"schema_add_column_vs_baseline":%s}\n' \
  "$SCHEMA_N" "$SHARED_N" "$DATABASE_N" \
  "$sqlite_bulk" "$sqlite_noop" "$sqlite_add" "$sqlite_failed" \
  "$schema_bulk" "$schema_noop" "$schema_add" "$schema_failed" \
  "$shared_bulk" "$shared_noop" "$shared_add" "$shared_failed" \
  "$database_bulk" "$database_noop" "$database_add" "$database_failed" \
  "$(div "$schema_bulk" "$sqlite_bulk")" "$baseline_s" "$(div "$schema_add" "$baseline_s")"
