#!/usr/bin/env bash
# Apply patches/series in order onto a fresh `patched` branch from the pristine base, at $WORK/tree.
# Atomic: the series is applied in a scratch clone and moved into place only if every patch
# applies. On failure it names the patch and the files, aborts the am, removes the scratch
# clone and any older tree (so no later `make wheel` can build a tree that is not this series).
. "$(dirname "$0")/lib.sh"
need git
[ -d "$PRISTINE/.git" ] || bash "$ROOT/build/source.sh"

mapfile -t names < <(series)
for p in "${names[@]}"; do
  [ -f "$PATCHES/$p" ] || die "patches/series lists '$p', but $PATCHES/$p does not exist"
done

tmp=$WORK/.tree.tmp
rm -rf "$tmp"
git_q clone -q --branch pristine "$PRISTINE" "$tmp"
git_q -C "$tmp" checkout -q -b patched
cp "$PRISTINE/.git/info/exclude" "$tmp/.git/info/exclude"

i=0
for p in "${names[@]}"; do
  i=$((i + 1))
  if ! out=$(git_q -C "$tmp" am -q --3way --keep-cr --keep-non-patch "$PATCHES/$p" 2>&1); then
    files=$(git -C "$tmp" diff --name-only --diff-filter=U 2>/dev/null | tr '\n' ' ')
    [ -n "$files" ] || files=$(sed -n 's/^error: patch failed: \([^:]*\):.*/\1/p; s/^error: \([^:]*\): does not exist in index/\1/p; s/^CONFLICT ([^)]*): .* in \(.*\)$/\1/p' <<<"$out" | sort -u | tr '\n' ' ')
    git -C "$tmp" am --abort >/dev/null 2>&1 || true
    rm -rf "$tmp" "$TREE" "$WORK/tree.stamp"
    echo "$out" | sed 's/^/    /' >&2
    die "patch $i/${#names[@]} '$p' does not apply to the tree so far (files: ${files:-unknown}). Nothing was applied; any older patched tree was removed. Rebase the patch (see README: Adding or refreshing a patch)."
  fi
done

rm -rf "$TREE"
mv "$tmp" "$TREE"
series_stamp > "$WORK/tree.stamp"
note "applied ${#names[@]} patch(es) onto pristine -> $TREE (branch patched)"
