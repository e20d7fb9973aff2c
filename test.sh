#!/usr/bin/env bash
# Sets pamfr up and runs the whole test suite: lint, then pytest against a real SQLite file
# and the PostgreSQL at 127.0.0.1:5432 (user postgres, database test; override with
# PAMFR_TEST_PG_URL). The desk's browser tests run in Debian's chromium when it is installed,
# and are skipped, saying so, when it is not. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache  # imports only go down: pyproject.toml [tool.importlinter]
if ! command -v chromium >/dev/null; then
  echo "test.sh: no chromium on PATH: the desk's browser tests (tests/browser) are skipped" >&2
fi
exec .venv/bin/pytest "$@"
