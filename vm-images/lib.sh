# Shared helpers for the vm-images recipes (sourced, not run).
#
# Everything here works on a private apt state under the cowlab cache, so recipes can resolve and
# download packages from bookworm, bookworm-backports and bullseye without touching the host's
# apt configuration.  Source lines always come from apt-sources.sh (the machine's own mirror).
set -euo pipefail

# Close descriptors inherited from whoever started the recipe (ctest, cowlab, a terminal):
# mmdebstrap's apt hooks run `cat >&N` through /bin/sh, and dash cannot name a descriptor above
# 9, while the pipes mmdebstrap opens get numbers above every inherited one ("Bad fd number",
# seen when `make test` builds images under ctest).  255 is bash's own handle on the script.
for _cowlab_fd in /proc/$$/fd/*; do
  _cowlab_fd=${_cowlab_fd##*/}
  case "$_cowlab_fd" in 0|1|2|255|*[!0-9]*) continue ;; esac
  eval "exec ${_cowlab_fd}>&-" 2>/dev/null || true
done
unset _cowlab_fd

VM_IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COWLAB_CACHE=${COWLAB_CACHE:-$HOME/.cache/cowlab}
# A "realm" is one private apt state with a consistent set of suites: bullseye and bookworm
# packages must not be resolved together (apt would mix their libc), except in the "mixed"
# realm used for the 5.10 profile's root (a bookworm root with bullseye's ZFS userland).
APT_REALM=${APT_REALM:-bookworm}
realm_suites() {
  case "$1" in
    bookworm) echo "bookworm bookworm-updates bookworm-security bookworm-backports" ;;
    bullseye) echo "bullseye bullseye-updates bullseye-security" ;;
    mixed) echo "bookworm bookworm-updates bookworm-security bullseye bullseye-security" ;;
    *) die "unknown apt realm '$1'" ;;
  esac
}
apt_dir() { echo "$COWLAB_CACHE/apt/$APT_REALM"; }

die() { echo "vm-images: $*" >&2; exit 1; }
step() { echo "::step $*"; }          # progress marker read by `cowlab vm build`
note() { echo "  $*"; }

need_tool() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found on the host (run: make deps)"
  done
}

papt_opts() {
  local APT_DIR; APT_DIR=$(apt_dir)
  printf '%s\n' \
    -o "Dir::Etc::sourcelist=$APT_DIR/etc/sources.list" -o "Dir::Etc::sourceparts=$APT_DIR/etc/sources.list.d" \
    -o "Dir::State=$APT_DIR/state" -o "Dir::State::Lists=$APT_DIR/lists" \
    -o "Dir::State::status=$APT_DIR/state/status" -o "Dir::Cache=$APT_DIR/cache" \
    -o "Dir::Cache::archives=$APT_DIR/archives" -o "Acquire::Languages=none" \
    -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64" -o "Debug::NoLocking=1" \
    -o "APT::Get::AllowUnauthenticated=false" -o "quiet=1" \
    -o "APT::Sandbox::User=root" -o "Dir::Etc::preferencesparts=$APT_DIR/etc/preferences.d"
}

# papt_init: write the private sources list (from the machine's mirror) and state skeleton.
papt_init() {
  local APT_DIR; APT_DIR=$(apt_dir)
  mkdir -p "$APT_DIR"/{etc/sources.list.d,etc/preferences.d,state,lists/partial,cache,archives/partial}
  [ -f "$APT_DIR/state/status" ] || : > "$APT_DIR/state/status"
  local want
  # shellcheck disable=SC2086
  want=$("$VM_IMAGES_DIR/apt-sources.sh" mmdebstrap $(realm_suites "$APT_REALM"))
  [ -n "$want" ] || die "apt-sources.sh printed no sources"
  if [ ! -f "$APT_DIR/etc/sources.list" ] || [ "$(cat "$APT_DIR/etc/sources.list")" != "$want" ]; then
    printf '%s\n' "$want" > "$APT_DIR/etc/sources.list.tmp"
    mv "$APT_DIR/etc/sources.list.tmp" "$APT_DIR/etc/sources.list"
  fi
}

papt() { local -a o; mapfile -t o < <(papt_opts); apt-get "${o[@]}" "$@"; }
papt_cache() { local -a o; mapfile -t o < <(papt_opts); apt-cache "${o[@]}" "$@"; }

# papt_update: refresh the private lists; on failure fall back to lists already present.
papt_update() {
  local APT_DIR; APT_DIR=$(apt_dir)
  papt_init
  if ! papt update >"$APT_DIR/update.log" 2>&1; then
    if ls "$APT_DIR"/lists/*_Packages* >/dev/null 2>&1; then
      echo "vm-images: apt update failed (see $APT_DIR/update.log); using the package lists from the last update" >&2
    else
      cat "$APT_DIR/update.log" >&2
      die "apt update of the private package lists failed and no earlier lists exist"
    fi
  fi
}

# papt_simulate PKG...: "name version" for every package an install of PKG... would bring in.
papt_simulate() {
  local APT_DIR out; APT_DIR=$(apt_dir)
  if ! out=$(papt -s install --no-install-recommends "$@" 2>"$APT_DIR/simulate.err"); then
    sed -n '/^The following/,$p' <<<"$out" | tail -n 25 >&2
    cat "$APT_DIR/simulate.err" >&2
    die "apt ($APT_REALM) cannot resolve: $*"
  fi
  awk '/^Inst /{v=$3; gsub(/[()]/,"",v); print $2, v}' <<<"$out" | sort -u
}

# papt_download DIR NAME=VERSION...: fetch exact package versions into DIR.
papt_download() {
  local dir=$1; shift
  mkdir -p "$dir"
  (cd "$dir" && papt download "$@" >/dev/null) || die "download failed: $*"
}

# mmdebstrap source lines for SUITE...
mm_sources() { "$VM_IMAGES_DIR/apt-sources.sh" mmdebstrap "$@"; }
