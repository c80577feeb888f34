#!/usr/bin/env bash
# A PostgreSQL cluster for stepwire's PostgreSQL store tests: installs Debian's `postgresql` if missing, starts
# its cluster, and creates the role `stepwire_test` (allowed to create databases: each test makes its own).
# Idempotent. Prints the URL the tests read from $STEPWIRE_TEST_PG_URL; to set it in the calling shell:
#   export STEPWIRE_TEST_PG_URL="$(.ci/postgres.sh)"
# As root (PostgreSQL itself runs as the user postgres); else prefix `sudo`.
set -euo pipefail
{
  command -v pg_lsclusters >/dev/null || apt-get install -y -q postgresql || { apt-get update -q && apt-get install -y -q postgresql; }
  version="$(pg_lsclusters --no-header | awk '$2 == "main" {print $1; exit}')"
  if [ -z "$version" ]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    pg_createcluster "$version" main
  fi
  pg_lsclusters --no-header | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -q online ||
    pg_ctlcluster "$version" main start
  port="$(pg_lsclusters --no-header | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')"
  for _ in $(seq 50); do su postgres -c "pg_isready -q -p $port" && break; sleep 0.2; done
  su postgres -c "psql -q -p $port -v ON_ERROR_STOP=1" <<SQL
SELECT 'CREATE ROLE stepwire_test LOGIN CREATEDB PASSWORD ''stepwire_test'''
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stepwire_test') \gexec
SQL
} >&2
echo "postgresql://stepwire_test:stepwire_test@127.0.0.1:${port}/postgres"
