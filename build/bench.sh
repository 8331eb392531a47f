#!/usr/bin/env bash
# make bench / make bench-quick / make bench-retraction (BENCH_SCRIPT=bench/retraction.py): pristine (the pinned source, unpatched) and patched (the built
# wheel) on the same traces, in one invocation. Arguments go to bench/run.py (see --help).
. "$(dirname "$0")/lib.sh"
VENV=${VENV:-$ROOT/build/venv}
bash "$ROOT/build/prepare.sh"
cd "$ROOT"
PYTHONPATH="$ROOT/ci/cpu" exec "$VENV/bin/python" "${BENCH_SCRIPT:-bench/run.py}" --pristine "$PRISTINE/python" "$@"
