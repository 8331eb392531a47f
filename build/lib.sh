# Shared settings and helpers for the build scripts. Sourced, not run.
# Every path can be overridden from the environment (the machinery tests do so).
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
WORK=${WORK:-$ROOT/build/work}         # pristine repo, patched tree, stamps
DL=${DL:-$ROOT/build/dl}               # verified sdist download
LOCK=${LOCK:-$ROOT/ci/sglang.lock}     # version, commit, sdist sha256
PATCHES=${PATCHES:-$ROOT/patches}      # series + format-patch files
SUBMODULE=${SUBMODULE:-$ROOT/sglang}   # optional real checkout
DIST=${DIST:-$ROOT/dist}               # built wheels
PY=${PY:-python3}

PRISTINE=$WORK/pristine                # git repo, branch `pristine` = pinned upstream
TREE=$WORK/tree                        # git repo, branch `patched` = pristine + series

die() { echo "error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || die "required tool '$t' is not installed (install it and re-run)"
  done
}

lock() { # lock KEY -> value from ci/sglang.lock
  local v
  v=$(sed -n "s/^$1=//p" "$LOCK")
  [ -n "$v" ] || die "$LOCK has no '$1='"
  echo "$v"
}

series() { # the patch names listed in patches/series, in order (quilt format: # comments, blank lines)
  [ -f "$PATCHES/series" ] || die "$PATCHES/series is missing"
  sed 's/#.*//' "$PATCHES/series" | awk 'NF {print $1}'
}

series_stamp() { # a hash of the series and every patch in it: what a tree was built from
  { series; series | while read -r p; do cat "$PATCHES/$p"; done; } | sha256sum | cut -c1-16
}

# Deterministic identity for commits this machinery makes (pristine base), so reruns agree.
export GIT_AUTHOR_NAME="sglang-mla build" GIT_AUTHOR_EMAIL="build@invalid"
export GIT_COMMITTER_NAME="sglang-mla build" GIT_COMMITTER_EMAIL="build@invalid"
git_q() { git -c advice.detachedHead=false -c init.defaultBranch=main "$@"; }
