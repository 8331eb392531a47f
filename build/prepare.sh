#!/usr/bin/env bash
# Shared prelude of make test and make bench: the CPU environment, a patched tree and wheel built
# from the current series, and that wheel installed into the environment (--no-deps).
. "$(dirname "$0")/lib.sh"
VENV=${VENV:-$ROOT/build/venv}
bash "$ROOT/build/venv.sh"
[ "$(cat "$WORK/tree.stamp" 2>/dev/null)" = "$(series_stamp)" ] || bash "$ROOT/build/apply.sh"
whl=$(ls "$DIST"/sglang-*.whl 2>/dev/null | head -1 || true)
if [ -z "$whl" ] || [ "$(cat "$DIST/.stamp" 2>/dev/null)" != "$(series_stamp)" ]; then
  bash "$ROOT/build/wheel.sh"
  series_stamp > "$DIST/.stamp"
  whl=$(ls "$DIST"/sglang-*.whl | head -1)
fi
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$(basename "$whl") $(series_stamp)" ]; then
  note "installing $(basename "$whl") into $VENV (--no-deps)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$whl" >&2
  echo "$(basename "$whl") $(series_stamp)" > "$VENV/.installed"
fi
