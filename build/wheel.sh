#!/usr/bin/env bash
# Build the patched tree into dist/sglang-<version>+mla.<N>-py3-none-any.whl, N = patches in the
# series. A PEP 440 local version still satisfies `sglang==<version>` pins, while `pip show sglang`
# and `sglang.__version__` name the fork. Upstream's dependency metadata is kept as it is.
. "$(dirname "$0")/lib.sh"
need git "$PY"
[ -d "$TREE/.git" ] || die "no patched tree at $TREE: run 'make apply' first"
[ "$(cat "$WORK/tree.stamp" 2>/dev/null)" = "$(series_stamp)" ] \
  || die "the patched tree at $TREE was not built from the current patches/series: run 'make apply' again"

version=$(lock version)
n=$(series | wc -l)
fork_version="$version+mla.$n"
rm -rf "$TREE/python/build" "$TREE/python"/*.egg-info "$DIST/.tmp"
mkdir -p "$DIST/.tmp"
note "building sglang $fork_version from $TREE/python"
SETUPTOOLS_SCM_PRETEND_VERSION="$fork_version" \
  "$PY" -m pip wheel -q --no-deps --no-cache-dir -w "$DIST/.tmp" "$TREE/python" >&2 \
  || { rm -rf "$DIST/.tmp"; die "wheel build failed"; }
whl=$(ls "$DIST"/.tmp/sglang-*.whl)
rm -f "$DIST"/sglang-*.whl
mv "$whl" "$DIST/"
rm -rf "$DIST/.tmp" "$TREE/python/build" "$TREE/python"/*.egg-info
note "built $DIST/$(basename "$whl")"
