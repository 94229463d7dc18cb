#!/usr/bin/env bash
# Install job_stream with its test dependencies in .venv and run the whole
# test suite (slow cases included).  Used as is by CI (.ci/run).
# Tests that need real daemons (SLURM, ssh hosts in network namespaces) get
# their Debian packages installed here when running as root.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv 2>/dev/null; then
        # Debian's python3 needs python3-venv for this
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        "$PY" -m venv .venv
    fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
for deps in .ci/install-*-deps; do
    [ -e "$deps" ] && bash "$deps"
done
exec .venv/bin/python -m pytest -q -ra "$@"
