#!/usr/bin/env bash
# Sets pamfr up and runs the whole test suite: lint, then pytest against a real SQLite file
# and the PostgreSQL at 127.0.0.1:5432 (user postgres, database test; override with
# PAMFR_TEST_PG_URL). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
