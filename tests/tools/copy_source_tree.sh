#!/usr/bin/env bash
# Copy fastconv's source files (no build outputs, no generated .c, no caches) to DEST.
# In a git checkout: the tracked and the untracked-but-not-ignored files as they are on disk;
# otherwise everything except what .gitignore names as build outputs.
# Usage: tests/tools/copy_source_tree.sh DEST
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dest=${1:?usage: copy_source_tree.sh DEST}
mkdir -p "$dest"
cd "$repo"
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -xf - -C "$dest"
else
    tar --exclude=./build --exclude=./dist --exclude='*.so' --exclude='./fastconv/_*.c' \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=.hypothesis \
        --exclude=.pytest_cache --exclude=.benchmarks -cf - . | tar -xf - -C "$dest"
fi
