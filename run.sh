#!/usr/bin/env bash
# Sets pamfr up and runs the MLLP daemon on 127.0.0.1:2575 with the embedded SQLite store
# (var/pamfr.db in this folder, whatever folder it is run from). Installs the daemon only
# (PAMFR_EXTRAS=pg adds psycopg for PostgreSQL). Extra arguments go to `pamfr serve`.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --daemon
here=$(pwd)
store=$(.venv/bin/python -c 'from pamfr.settings.config import load_settings; print(load_settings().database.url)')
cat >&2 <<TEXT
pamfr: store: $store (--db or --config choose another)
  The commands are in $here/.venv/bin. To type 'pamfr' in another shell:
    export PATH="$here/.venv/bin:\$PATH"      (or: source .venv/bin/activate)
  Then, with the daemon running:
    pamfr send tests/corpus/public/00[1-8]*.hl7 --to 127.0.0.1:2575   # the public examples
    pamfr messages                                               # what came in, and the ACKs
    pamfr patient show --ipp <IPP>                               # one patient
TEXT
exec .venv/bin/pamfr serve "$@"
