#!/usr/bin/env bash
# Install (Debian), start and prepare a PostgreSQL server on 127.0.0.1 for the distributed-study tests; prints
# the URL the tests read from TLR_TEST_POSTGRES_URL. Needs root.
set -euo pipefail
cd /  # su postgres cannot enter a private working directory
export DEBIAN_FRONTEND=noninteractive
command -v pg_ctlcluster >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
  || apt-get install -y -qq postgresql >/dev/null
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >/dev/null
pg_ctlcluster "$version" main start >/dev/null 2>&1 || pg_ctlcluster "$version" main status >/dev/null 2>&1
for _ in $(seq 30); do su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break; sleep 1; done
# a password that occurs nowhere else, so the secret tests can grep every file a study writes for it
password=tlrpw_Kq7vX2
su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='tlr'\"" | grep -q 1 \
  || su postgres -c "psql -qc 'create role tlr login'"
su postgres -c "psql -qc \"alter role tlr password '$password'\""
su postgres -c "psql -qAtc \"select 1 from pg_database where datname='tlr_test'\"" | grep -q 1 \
  || su postgres -c "psql -qc 'create database tlr_test owner tlr'"
echo "postgresql+psycopg://tlr:$password@127.0.0.1:5432/tlr_test"
