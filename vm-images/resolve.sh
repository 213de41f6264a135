#!/usr/bin/env bash
# resolve.sh PROFILE.conf — resolve a kernel profile's inputs against the archive.
#
# Prints KEY=value lines (values are space-separated words) naming the exact package versions
# the profile's images are built from.  `cowlab vm build` hashes them, with the recipe files, to
# find or build the cached images.  Env: COWLAB_BIN (optional) — a binary whose runtime libraries
# the root must provide (found with ldd + dpkg -S on the host).
source "$(dirname "$0")/lib.sh"
# The realms of the newest-kernel profiles.  Only this script refreshes a realm's lists (the
# recipes download from lists already resolved here), and lib.sh is an input of every cached
# image's key: defining these realms here keeps the existing profiles' images valid.
eval "lib_$(declare -f realm_suites)"
realm_suites() {
  case "$1" in
    trixie) echo "trixie trixie-updates trixie-security trixie-backports" ;;
    sid) echo "unstable testing" ;;
    *) lib_realm_suites "$1" ;;
  esac
}
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
# Since Debian's 6.16 packaging, linux-image-RELEASE is an empty package: the image is in
# linux-binary-RELEASE, the modules in linux-modules-RELEASE and the config in linux-base-RELEASE.
echo "KERNEL_PARTS=$(pick "^linux-(binary|modules|base)-${release//+/\\+}\$")"
echo "HEADER_PKGS=$(pick '^linux-(headers-[0-9]|kbuild-)')"
echo "COMPILER_PKGS=$(pick '^(gcc-[0-9]+|linux-compiler-gcc-.*)$')"
zfs=$(pick '^zfs-dkms$')
[ -n "$zfs" ] || die "zfs-dkms not found via: $(conf_get ZFS_SELECT)"
zver=${zfs#zfs-dkms=}
echo "ZFS_DKMS_PKG=$zfs"
echo "ZFS_VERSION=$zver"
echo "ZFS_UPSTREAM=${zver%%-*}"
# The kernels zfs-dkms declares it supports: its "Recommends: linux-libc-dev (<< X), (>= Y)"
# (the packagers' promise, checked against the kernel's upstream version).  Outside that range
# the profile is built without a ZFS module and its zfs cells skip with this reason.
kver=${image#*=}; kver=${kver%%-*}
range=$(papt_cache show "$zfs" | sed -n 's/^Recommends: //p' | head -n1 | tr ',' '\n' |
        sed -n 's/^ *linux-libc-dev (\([<>=]*\) \([^)]*\)).*/\1 \2/p')
zfs_support=yes declared=""
while read -r op v; do
  [ -n "$op" ] || continue
  declared+="${declared:+, }$op $v"
  dpkg --compare-versions "$kver" "$op" "$v" || zfs_support=no
done <<<"$range"
echo "ZFS_SUPPORT=$zfs_support"
if [ "$zfs_support" = no ]; then
  echo "ZFS_UNSUPPORTED=not supported by zfs-dkms ${zfs#*=} (declares linux-libc-dev $declared; kernel $kver)"
fi
echo "BUSYBOX=busybox-static=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo missing)"

# --- root packages (root realm) ---------------------------------------------------------------
export APT_REALM=$ROOT_REALM
[ "$ROOT_REALM" = "$KERNEL_REALM" ] || papt_update
# The ZFS userland at exactly the module's version: zfsutils-linux and every package it pins
# with "(= version)", transitively.
# ZFS_USERLAND_SUITE (optional): take the newest userland of that suite of the root realm instead
# of the module's version (a bookworm root cannot install a newer suite's userland).
uver=$zver
if [ -n "$(conf_get ZFS_USERLAND_SUITE)" ]; then
  uver=$(papt_cache madison zfsutils-linux |
         awk -F'|' -v s="$(conf_get ZFS_USERLAND_SUITE)" 'index($3, " " s "/") {gsub(/ /, "", $2); print $2; exit}')
  [ -n "$uver" ] || die "zfsutils-linux not found in $(conf_get ZFS_USERLAND_SUITE) ($ROOT_REALM realm)"
fi
zver=$uver
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
