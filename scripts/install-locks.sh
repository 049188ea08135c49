#!/usr/bin/env bash
# Install hashed lock files into a virtualenv: with uv (installed from requirements-bootstrap.lock
# next to that python or in the app's .venv; several times faster than pip), or with pip when uv cannot reach the package
# index (uv does not read pip's configuration: a mirror set only in pip.conf is pip's alone).
#   scripts/install-locks.sh VENV_PYTHON LOCK [LOCK...]
set -euo pipefail
python=$1
shift
locks=()
for lock in "$@"; do locks+=(-r "$lock"); done
uv="$(dirname "$python")/uv"
[ -x "$uv" ] || uv="$(dirname "$0")/../.venv/bin/uv"  # the app's virtualenv has it (requirements-bootstrap.lock)
# bytecode compiled at install time: a process that starts later (a worker, a CLI command) need not
if [ -x "$uv" ] && "$uv" pip install --quiet --python "$python" --no-deps --require-hashes --compile-bytecode "${locks[@]}"; then
  exit 0
fi
echo "uv could not install the locks; installing them with pip" >&2
"$python" -m pip --version >/dev/null 2>&1 || "$python" -m ensurepip --upgrade --default-pip >/dev/null
"$python" -m pip install --quiet --upgrade "pip==26.3"
"$python" -m pip install --quiet --no-deps --require-hashes "${locks[@]}"
