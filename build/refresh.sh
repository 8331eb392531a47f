#!/usr/bin/env bash
# Export the commits on the `patched` branch (pristine..patched) back to patches/, one file per
# commit, and rewrite patches/series in commit order. Output is stable: zero commit id in the
# From line, no signature, fixed abbreviation; a file whose content did not change is left alone.
. "$(dirname "$0")/lib.sh"
need git
[ -d "$TREE/.git" ] || die "no patched tree at $TREE: run 'make apply' first, commit your change there, then refresh"
n=$(git -C "$TREE" rev-list --count pristine..patched)
[ "$n" -gt 0 ] || die "the patched branch has no commits on top of pristine"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
git -C "$TREE" -c core.abbrev=12 -c diff.noprefix=false -c format.signature= \
  format-patch -q --zero-commit --no-signature --full-index --no-numbered --no-renames --filename-max-length=80 \
  -o "$out" pristine..patched >/dev/null

mkdir -p "$PATCHES"
{
  grep '^#' "$PATCHES/series" 2>/dev/null || true
} > "$out/series.head"
: > "$out/series.body"
for f in "$out"/0*.patch; do
  name=$(basename "$f" | sed 's/^[0-9]*-//')
  num=$(basename "$f" | cut -c1-4)
  name="$num-$name"
  if [ -f "$PATCHES/$name" ] && cmp -s "$f" "$PATCHES/$name"; then
    :
  else
    cp "$f" "$PATCHES/$name"
    note "wrote patches/$name"
  fi
  echo "$name" >> "$out/series.body"
done
# Patch files no longer produced by the branch are removed from patches/.
for f in "$PATCHES"/*.patch; do
  [ -e "$f" ] || continue
  grep -qx "$(basename "$f")" "$out/series.body" || { rm -f "$f"; note "removed patches/$(basename "$f")"; }
done
cat "$out/series.head" "$out/series.body" > "$out/series.new"
cmp -s "$out/series.new" "$PATCHES/series" 2>/dev/null || cp "$out/series.new" "$PATCHES/series"
series_stamp > "$WORK/tree.stamp"
note "patches/ now holds $n patch(es) from $TREE"
