#!/usr/bin/env bash
# resolve.sh PROFILE.conf — resolve a kernel profile's inputs against the archive.
#
# Prints KEY=value lines (values are space-separated words) naming the exact package versions
# the profile's images are built from.  `cowlab vm build` hashes them, with the recipe files, to
# find or build the cached images.  Env: COWLAB_BIN (optional) — a binary whose runtime libraries
# the root must provide (found with ldd + dpkg -S on the host).
source "$(dirname "$0")/lib.sh"
conf=${1:?usage: resolve.sh PROFILE.conf}
[ -f "$conf" ] || die "profile file '$conf' not found"
conf_get() { sed -n "s/^$1=//p" "$conf" | tail -n1; }
need_tool apt-get apt-cache dpkg-query

KERNEL_REALM=$(conf_get KERNEL_REALM); ROOT_REALM=$(conf_get ROOT_REALM)
[ -n "$KERNEL_REALM" ] && [ -n "$ROOT_REALM" ] || die "$conf: KERNEL_REALM and ROOT_REALM are required"

for k in KERNEL_REALM BUILDER_SUITES ROOT_REALM ROOT_SUITES; do echo "$k=$(conf_get $k)"; done

# --- kernel, headers, compiler, zfs-dkms (kernel realm) -------------------------------------
export APT_REALM=$KERNEL_REALM
papt_update
# shellcheck disable=SC2046
kset=$(papt_simulate $(conf_get KERNEL_SELECT) $(conf_get ZFS_SELECT))
pick() { awk -v re="$1" '$1 ~ re {print $1 "=" $2}' <<<"$kset" | tr '\n' ' ' | sed 's/ $//'; }
image=$(pick '^linux-image-[0-9].*-cloud-amd64$')
[ -n "$image" ] || die "no linux-image-*-cloud-amd64 in the resolution of: $(conf_get KERNEL_SELECT)"
release=${image%%=*}; release=${release#linux-image-}
echo "KERNEL_RELEASE=$release"
echo "KERNEL_PKG=$image"
echo "HEADER_PKGS=$(pick '^linux-(headers-[0-9]|kbuild-)')"
echo "COMPILER_PKGS=$(pick '^(gcc-[0-9]+|linux-compiler-gcc-.*)$')"
zfs=$(pick '^zfs-dkms$')
[ -n "$zfs" ] || die "zfs-dkms not found via: $(conf_get ZFS_SELECT)"
zver=${zfs#zfs-dkms=}
echo "ZFS_DKMS_PKG=$zfs"
echo "ZFS_VERSION=$zver"
echo "ZFS_UPSTREAM=${zver%%-*}"
echo "BUSYBOX=busybox-static=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo missing)"

# --- root packages (root realm) ---------------------------------------------------------------
export APT_REALM=$ROOT_REALM
[ "$ROOT_REALM" = "$KERNEL_REALM" ] || papt_update
# The ZFS userland at exactly the module's version: zfsutils-linux and every package it pins
# with "(= version)", transitively.
userland=() ; todo=(zfsutils-linux)
while [ ${#todo[@]} -gt 0 ]; do
  p=${todo[0]}; todo=("${todo[@]:1}")
  [[ " ${userland[*]} " == *" $p=$zver "* ]] && continue
  fields=$(papt_cache show "$p=$zver" 2>/dev/null | sed -n 's/^\(Pre-\)\{0,1\}Depends: //p') ||
    die "$p=$zver is not available in the $ROOT_REALM realm"
  papt_cache show "$p=$zver" >/dev/null 2>&1 || die "$p=$zver is not available in the $ROOT_REALM realm"
  userland+=("$p=$zver")
  for d in $(tr ',' '\n' <<<"$fields" | awk -v pin="(= $zver)" 'index($0, pin) {print $1}'); do
    todo+=("$d")
  done
done
echo "ZFS_USERLAND=${userland[*]}"

runtime=$(grep -v '^#' "$VM_IMAGES_DIR/packages/runtime.txt" | awk 'NF' | sort -u)
if [ -n "${COWLAB_BIN:-}" ]; then
  [ -x "$COWLAB_BIN" ] || die "COWLAB_BIN '$COWLAB_BIN' is not an executable"
  # ldd prints "soname => /path (addr)"; map each path to its Debian package on this host.
  libs=$(ldd "$COWLAB_BIN" | awk '$2=="=>" && $3 ~ /^\// {print $3}')
  derived=$(for l in $libs; do
      r=$(realpath "$l"); for c in "$l" "$r" "/usr$l" "/usr$r" "${l#/usr}" "${r#/usr}"; do
        dpkg -S "$c" 2>/dev/null | head -n1 | cut -d: -f1 && break; done
    done | sort -u)
  # ZFS libraries come with the profile's userland (their sonames are stable across 2.0-2.3).
  derived=$(grep -v -E '^(libzfs|libnvpair|libuutil|libzpool|libc6$)' <<<"$derived" || true)
  runtime=$(printf '%s\n%s\n' "$runtime" "$derived" | awk 'NF' | sort -u)
fi
echo "RUNTIME_PKGS=$(tr '\n' ' ' <<<"$runtime" | sed 's/ $//')"
base=$(grep -v '^#' "$VM_IMAGES_DIR/packages/base.txt" | awk 'NF' | tr '\n' ' ' | sed 's/ $//')
echo "BASE_PKGS=$base"
# The exact versions the root's explicit packages resolve to, with their dependencies: a change
# in any of them changes the root's input hash.  Essential packages come with minbase.
ess=$(/usr/lib/apt/apt-helper cat-file "$(apt_dir)"/lists/*_dists_bookworm_main_binary-amd64_Packages* |
      awk '/^Package:/{p=$2} /^Essential: yes/{print p}' | sort -u | tr '\n' ' ')
[ -n "$ess" ] || die "no Essential packages found in the bookworm package list"
# shellcheck disable=SC2086
closure=$(papt_simulate $base $runtime ${userland[*]} $ess)
echo "ROOT_CLOSURE=$(sha256sum <<<"$closure" | cut -c1-32) $(wc -l <<<"$closure") packages"
