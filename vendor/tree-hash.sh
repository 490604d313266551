#!/usr/bin/env bash
# The content hash of an SPDK source tree: every file's path and SHA-256, every
# symlink's target, and which files are executable, in C-locale order. Times,
# owners and other mode bits (umask) do not count, so two extractions of the
# same content hash alike. vendor/spdk-source.env records the pinned tree's.
# usage: vendor/tree-hash.sh DIR
set -euo pipefail
[ $# -eq 1 ] && [ -d "$1" ] || { echo "usage: $0 DIR" >&2; exit 2; }
cd "$1"
export LC_ALL=C
skip=(-path ./.spdk-pmem-source -prune -o)
{
  find . "${skip[@]}" -type l -printf 'link %p %l\n' | sort
  find . "${skip[@]}" -type f -perm -u+x -printf 'exec %p\n' | sort
  find . "${skip[@]}" -type f -print0 | sort -z | xargs -0 -r sha256sum
} | sha256sum | cut -d' ' -f1
