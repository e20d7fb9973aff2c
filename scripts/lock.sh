#!/usr/bin/env bash
# Regenerates the hashed lock files from pyproject.toml (run it after changing a dependency):
#   requirements/daemon.txt      what ./run.sh installs
#   requirements/daemon-pg.txt   the same with the [pg] extra (PAMFR_EXTRAS=pg ./run.sh, Dockerfile)
#   requirements/test.txt        what ./test.sh installs ([test] and [pg])
# Resolved by pip-tools (pip-compile --generate-hashes) against PyPI alone, for the Python that
# runs this script (CPython 3.11, as the Dockerfile's); each file records every file hash of each
# pinned release, so pip installs exactly these bytes (--require-hashes) or nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tools=.lock-venv
# pip-tools in a venv of its own: it is not a dependency of pamfr.
export PIP_CONFIG_FILE=/dev/null  # PyPI only: no local index, find-links or constraint file
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT || true
if [ ! -x "$tools/bin/pip-compile" ]; then
  "$PYTHON" -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet "pip-tools>=7.4,<8"
fi
compile() {
  local out=$1
  shift
  CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$tools/bin/pip-compile" --quiet --generate-hashes \
    --allow-unsafe --strip-extras --all-build-deps --no-emit-index-url \
    --output-file "$out" "$@" pyproject.toml
}
mkdir -p requirements
compile requirements/daemon.txt
compile requirements/daemon-pg.txt --extra pg
compile requirements/test.txt --extra pg --extra test
echo "requirements/*.txt regenerated from pyproject.toml"
