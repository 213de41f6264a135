#!/usr/bin/env bash
# Boot-to-first-command per kernel profile vs a bare busybox initramfs boot of the same kernel
# under the same acceleration (target ratio <= 1.5).  Profiles that are not built are built first.
#   bench/vm/boot.sh COWLAB [RUNS] [PROFILE...]
set -euo pipefail
cowlab=${1:?usage: boot.sh COWLAB [RUNS] [PROFILE...]}; shift
runs=${1:-3}; shift || true
profiles=("$@"); [ ${#profiles[@]} -gt 0 ] || profiles=(debian-6.1 debian-6.12 debian-5.10)
for p in "${profiles[@]}"; do
  "$cowlab" vm build --profile "$p" --quick-verify >/dev/null 2>&1 || "$cowlab" vm build --profile "$p"
  "$cowlab" vm bench --profile "$p" --runs "$runs"
done
