#!/usr/bin/env bash
# make test: build what is missing, install the wheel into the CPU environment (--no-deps), and run
#  (a) SGLang's own CPU tests for the code the series touches (ci/upstream-tests.txt), when the
#      sglang/ submodule is checked out; otherwise say plainly that they were skipped and why;
#  (b) the tests the patches add; (c) the fork's own tests (tests/: machinery, benchmark smoke);
#  then (d) build/check_series.sh: every patch applies and passes its tests at its point in the series.
. "$(dirname "$0")/lib.sh"
VENV=${VENV:-$ROOT/build/venv}
t0=$SECONDS
bash "$ROOT/build/prepare.sh"

targets=()
deselect=()
if [ -e "$SUBMODULE/.git" ]; then
  while read -r kind t; do
    if [ "$kind" = deselect ]; then  # a test that asserts the pin's behaviour the series changes
      deselect+=(--deselect "$TREE/$t")
      continue
    fi
    t=$kind
    [ -f "$TREE/$t" ] || die "ci/upstream-tests.txt lists $t, which the checkout at the pin does not have"
    targets+=("$TREE/$t")
  done < <(sed 's/#.*//' "$ROOT/ci/upstream-tests.txt" | awk 'NF {print $1, $2}')
  note "upstream CPU tests: ${#targets[@]} file(s) from ci/upstream-tests.txt"
else
  echo "SKIPPED: SGLang's own CPU tests (ci/upstream-tests.txt): the sglang/ submodule is not checked out and the PyPI sdist ships no test/ folder. Run 'git submodule update --init' to include them."
fi
mapfile -t added < <(git -C "$TREE" diff --name-only --diff-filter=AM pristine..patched -- 'test/*test_*.py')
note "tests added by the series: ${#added[@]} file(s)"
for t in "${added[@]}"; do targets+=("$TREE/$t"); done
targets+=("$ROOT/tests")

cd "$ROOT"
PYTHONPATH="$ROOT/ci/cpu${PYTHONPATH:+:$PYTHONPATH}" SGLANG_FORK_VENV="$VENV" \
  "$VENV/bin/python" -m pytest -p sglang_cpu --import-mode=importlib -q -ra --disable-warnings "${deselect[@]}" "${targets[@]}"
bash "$ROOT/build/check_series.sh"
note "make test took $((SECONDS - t0)) s"
