#!/usr/bin/env bash
# Bisectability: for k = 1..N, apply the first k patches onto a scratch copy of the pristine base
# and run the tests that those k patches add, against that source tree (not the wheel).
. "$(dirname "$0")/lib.sh"
VENV=${VENV:-$ROOT/build/venv}
[ -d "$PRISTINE/.git" ] || bash "$ROOT/build/source.sh"
[ -x "$VENV/bin/python" ] || bash "$ROOT/build/venv.sh"
mapfile -t names < <(series)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/check-series.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/work" "$scratch/patches"
cp -a "$PRISTINE" "$scratch/work/pristine"
cp "$WORK/pristine.from" "$scratch/work/"
k=0
for p in "${names[@]}"; do
  k=$((k + 1))
  cp "$PATCHES/$p" "$scratch/patches/"
  echo "$p" >> "$scratch/patches/series"
  WORK=$scratch/work PATCHES=$scratch/patches bash "$ROOT/build/apply.sh" 2>/dev/null \
    || die "check-series: patch $k/${#names[@]} '$p' does not apply on top of the ones before it"
  tree=$scratch/work/tree
  mapfile -t tests < <(git -C "$tree" diff --name-only --diff-filter=AM pristine..patched -- 'test/*test_*.py')
  if [ ${#tests[@]} -eq 0 ]; then
    die "check-series: after patch $k '$p' the series has added no tests"
  fi
  note "check-series $k/${#names[@]} $p: ${#tests[@]} test file(s)"
  (cd "$tree" && PYTHONPATH="$tree/python:$ROOT/ci/cpu" \
    "$VENV/bin/python" -m pytest -p sglang_cpu --import-mode=importlib -q -p no:cacheprovider --disable-warnings "${tests[@]}") \
    || die "check-series: tests fail at patch $k/${#names[@]} '$p'"
done
echo "check-series: all ${#names[@]} patch(es) apply in order and pass their tests at their point in the series"
