#!/usr/bin/env bash
# Prints the path of a real Debian root filesystem as one layer tar (bookworm minbase, made
# with mmdebstrap from Debian's packages), building it into the cache on first use.
# Used by `make run` and the import benchmarks.  The tar is built in a temp file inside the
# cache and renamed into place, so an interrupted build never leaves a partial entry.
set -euo pipefail
# mmdebstrap's apt hooks name pipes as `cat >&N` through dash, which stops at 9: close
# whatever descriptors the caller (ctest, make) left open so the pipes get small numbers.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  case "$fd" in 0|1|2|255|*[!0-9]*) continue ;; esac
  eval "exec ${fd}>&-" 2>/dev/null || true
done
here=$(cd "$(dirname "$0")" && pwd)
cache=${COWLAB_CACHE:-$HOME/.cache/cowlab}/layers
out=$cache/debian-bookworm-minbase.tar
mkdir -p "$cache"
# mmdebstrap writes members as "./etc/...".
if [ -s "$out" ] && tar -tf "$out" ./etc/debian_version >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
rm -f "$out"
tmp=$(mktemp "$cache/.minbase-XXXXXX.tar")
trap 'rm -f "$tmp"' EXIT
mapfile -t sources < <("$here/apt-sources.sh" mmdebstrap bookworm bookworm-updates)
echo "minbase-tar: building a Debian bookworm minbase tree with mmdebstrap (about a minute)" >&2
SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --mode=root --variant=minbase \
  --include=ca-certificates,less,procps,iproute2 bookworm "$tmp" "${sources[@]}" >&2
mv "$tmp" "$out"
trap - EXIT
echo "$out"
