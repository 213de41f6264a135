#!/usr/bin/env bash
# Derive apt sources from this machine's own Debian source, never from a hard-coded mirror.
#
#   apt-sources.sh host            add `contrib` and bookworm-backports to the host's apt
#                                  configuration (idempotent; needed for libzfslinux-dev).
#   apt-sources.sh uri [archive]   print the mirror URI the machine uses for the Debian
#                                  archive ("debian", default) or the security archive
#                                  ("debian-security").
#   apt-sources.sh mmdebstrap SUITE [SUITE...]
#                                  print one-line `deb` sources for mmdebstrap, each with
#                                  `main contrib`, for the given suites.
set -euo pipefail

# Print "URI<TAB>SUITES" for every deb source on the machine (deb822 and one-line format).
list_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS="";FS="\n"}{
        t="";u="";s="";
        for(i=1;i<=NF;i++){
          if($i ~ /^Types:/){sub(/^Types:[ \t]*/,"",$i);t=$i}
          if($i ~ /^URIs:/){sub(/^URIs:[ \t]*/,"",$i);u=$i}
          if($i ~ /^Suites:/){sub(/^Suites:[ \t]*/,"",$i);s=$i}
        }
        if(t ~ /(^| )deb( |$)/ && u!="") print u "\t" s}' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1=="deb"{u=$2; if(u ~ /^\[/){u=$3; s=$4}else{s=$3} print u "\t" s}' "$f"
  done
}

# The URI serving the main Debian archive (a source that lists a plain release suite) or the
# security archive (a source that lists a *-security suite).
archive_uri() {
  local kind=${1:-debian}
  local line
  while IFS=$'\t' read -r uri suites; do
    case "$kind" in
      debian-security)
        if [[ " $suites " == *-security* ]]; then echo "${uri%% *}"; return 0; fi ;;
      *)
        for s in $suites; do
          case "$s" in
            *-security|*-updates|*-backports) ;;
            *) echo "${uri%% *}"; return 0 ;;
          esac
        done ;;
    esac
  done < <(list_sources)
  echo "apt-sources.sh: no Debian '$kind' source found in /etc/apt/sources.list{,.d}" >&2
  return 1
}

case "${1:-}" in
  uri) archive_uri "${2:-debian}" ;;
  host)
    uri=$(archive_uri debian)
    target=/etc/apt/sources.list.d/cowlab-contrib.sources
    # contrib for the suites the machine already has (main stays in its own file), and
    # bookworm-backports with main and contrib.
    want=$(printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" "$uri")
    if [ ! -f "$target" ] || [ "$(cat "$target")" != "$want" ]; then
      printf '%s\n' "$want" > "$target"
      echo "apt-sources.sh: wrote $target (contrib and bookworm-backports from $uri)" >&2
      apt-get update -qq
    fi ;;
  mmdebstrap)
    shift
    uri=$(archive_uri debian)
    suri=$(archive_uri debian-security 2>/dev/null || true)
    for s in "$@"; do
      case "$s" in
        *-security) [ -n "$suri" ] && echo "deb $suri $s main contrib" ;;
        *) echo "deb $uri $s main contrib" ;;
      esac
    done ;;
  *) echo "usage: apt-sources.sh host | uri [debian|debian-security] | mmdebstrap SUITE..." >&2; exit 2 ;;
esac
