#!/usr/bin/env bash
# Create the CPU test/bench environment at build/venv (or $VENV): torch 2.13.0 CPU, the pinned
# requirements needed to import SGLang's mem_cache and managers modules, pytest and hypothesis.
# SGLang itself is not installed here: `make test` installs the built wheel with --no-deps.
. "$(dirname "$0")/lib.sh"
need "$PY"
VENV=${VENV:-$ROOT/build/venv}
TORCH=torch==2.13.0
TORCHVISION=torchvision==0.28.0
want=$( { echo "$TORCH $TORCHVISION"; cat "$ROOT/ci/requirements-cpu.txt"; } | sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.stamp" 2>/dev/null)" = "$want" ]; then
  note "test environment up to date at $VENV"
  exit 0
fi
rm -rf "$VENV"
note "creating the CPU test environment at $VENV"
"$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" "$TORCH" >&2 || { rm -rf "$VENV"; die "could not install $TORCH (CPU build)"; }
"${pip[@]}" "$TORCH" -r "$ROOT/ci/requirements-cpu.txt" >&2 || { rm -rf "$VENV"; die "could not install ci/requirements-cpu.txt"; }
# torchvision's PyPI wheel targets CUDA torch; its Python side is all SGLang imports here.
"${pip[@]}" --no-deps "$TORCHVISION" >&2 || { rm -rf "$VENV"; die "could not install $TORCHVISION"; }
"$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
  || { rm -rf "$VENV"; die "the environment ended up with another torch than 2.13.0"; }
echo "$want" > "$VENV/.stamp"
note "test environment ready"
