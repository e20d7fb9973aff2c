#!/usr/bin/env bash
# Sets pamfr up and runs the MLLP daemon on 127.0.0.1:2575 with the embedded SQLite store
# (./var/pamfr.db). Installs the daemon only (PAMFR_EXTRAS=pg adds psycopg for PostgreSQL).
# Extra arguments go to `pamfr serve` (try --help).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --daemon
exec .venv/bin/pamfr serve "$@"
