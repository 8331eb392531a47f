#!/usr/bin/env bash
# Remove the patched tree (the pristine base and downloads stay).
. "$(dirname "$0")/lib.sh"
rm -rf "$TREE" "$WORK/.tree.tmp" "$WORK/tree.stamp"
note "patched tree removed"
