#!/usr/bin/env bash
# Image build time of the default profile from scratch (an empty cache: resolve, ZFS module,
# kernel, root) and from the cache (resolve + full sha256 verification of the cached images).
#   bench/vm/build.sh COWLAB [PROFILE]
# The scratch build uses a temporary COWLAB_CACHE (removed afterwards), so it takes minutes.
set -euo pipefail
cowlab=${1:?usage: build.sh COWLAB [PROFILE]}
profile=${2:-debian-6.1}
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/cowlab-bench-cache.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
t() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }; awk -v a="$(date +%s.%N)" -v b="$s" "BEGIN{print a-b}"; }
scratch=$(COWLAB_CACHE=$tmp/cache t "$cowlab" vm build --profile "$profile")
cached=$(COWLAB_CACHE=$tmp/cache t "$cowlab" vm build --profile "$profile")
quick=$(COWLAB_CACHE=$tmp/cache t "$cowlab" vm build --profile "$profile" --quick-verify)
printf '%-12s image build: from scratch %.1fs, from cache %.1fs (sha256 verify), %.1fs (size verify)\n' \
  "$profile" "$scratch" "$cached" "$quick"
