#!/usr/bin/env bash
# make test-slow: the property tests the series adds (test_*properties*.py), run against the
# patched source tree with the profile in HYPOTHESIS_PROFILE (the Makefile sets "slow").
. "$(dirname "$0")/lib.sh"
VENV=${VENV:-$ROOT/build/venv}
bash "$ROOT/build/prepare.sh"
mapfile -t tests < <(git -C "$TREE" diff --name-only --diff-filter=AM pristine..patched -- 'test/*test_*properties*.py')
[ ${#tests[@]} -gt 0 ] || die "the series adds no property tests (test/**/test_*properties*.py)"
note "property tests (HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}): ${tests[*]}"
cd "$TREE" && PYTHONPATH="$TREE/python:$ROOT/ci/cpu" \
  "$VENV/bin/python" -m pytest -p sglang_cpu --import-mode=importlib -q -p no:cacheprovider --disable-warnings "${tests[@]}"
