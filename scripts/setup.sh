#!/usr/bin/env bash
# Creates .venv and installs pamfr from the hashed lock files (requirements/, made by
# scripts/lock.sh from pyproject.toml; idempotent; re-run after pulling).
#   scripts/setup.sh            pamfr with its test tools (what ./test.sh uses)
#   scripts/setup.sh --daemon   the daemon only (what ./run.sh uses); PAMFR_EXTRAS=pg adds
#                               psycopg for a PostgreSQL store
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
case "${1:-}" in
  --daemon) extras=${PAMFR_EXTRAS:-} ;;
  "") extras=test,pg ;;
  *) echo "usage: scripts/setup.sh [--daemon]" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The stamp lists the extras installed; what is asked must be among them, and the stamp newer
# than pyproject.toml and the lock files. A test set-up therefore serves ./run.sh too.
stamp=.venv/.pamfr-installed
installed=""
if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] \
  && [ -z "$(find requirements -name '*.txt' -newer "$stamp")" ]; then
  installed=",$(cat "$stamp"),"
fi
missing=0
[ -n "$installed" ] || missing=1
for extra in ${extras//,/ }; do
  case "$installed" in *",$extra,"*) ;; *) missing=1 ;; esac
done
if [ "$missing" = 1 ]; then
  # keep what an earlier set-up installed (./run.sh after ./test.sh keeps the test tools)
  wanted=$(printf '%s\n' ${extras//,/ } ${installed//,/ } | sort -u | paste -sd, -)
  # The locked set (scripts/lock.sh), each file checked against its hash, from PyPI only;
  # then pamfr itself, with nothing more.
  case ",$wanted," in
    *,test,*) lock=requirements/test.txt ;;
    *,pg,*) lock=requirements/daemon-pg.txt ;;
    *) lock=requirements/daemon.txt ;;
  esac
  (
    export PIP_CONFIG_FILE=/dev/null
    unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT || true
    .venv/bin/python -m pip install --quiet --require-hashes --no-deps -r "$lock"
    # (setuptools warns that an editable install is one; nothing to act on)
    PYTHONWARNINGS=ignore .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation \
      --no-index -e .
  )
  printf '%s\n' "$wanted" > "$stamp"
fi
