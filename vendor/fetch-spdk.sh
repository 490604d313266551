#!/usr/bin/env bash
# Fetches the pinned SPDK source (vendor/spdk-source.env) into vendor/src/spdk:
# tries each listed tarball in order (a local copy, the download directory,
# then the Debian mirror) and falls through to the next on a missing or wrong
# file; extracts only its SPDK subdirectory, applies the source's patch, and
# checks the tree's content hash, which is the same for every source.
# Idempotent: nothing is fetched when the verified tree is already there.
#
# usage: vendor/fetch-spdk.sh [--source N] [--check]
#   --source N: only that source (1..SPDK_SOURCES)
#   --check: fetch nothing; exit 0 if the verified tree is there, 1 if not
#
# Environment:
#   SPDK_PMEM_SOURCE_TARBALL  a tarball you already have, or a directory holding
#                             one; checked by size and SHA-256 like a download
#   SPDK_PMEM_DOWNLOAD_DIR    where downloads go (default vendor/download)
#   SPDK_PMEM_DEBIAN_MIRROR   Debian mirror (default: the one apt uses here,
#                             else http://deb.debian.org/debian)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=vendor/spdk-source.env
. "$here/spdk-source.env"

only=""
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --source) only=${2:-}; shift 2 || shift ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch-spdk: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$only" in
  '') ;;
  *[!0-9]*|0) echo "fetch-spdk: --source takes 1..$SPDK_SOURCES, not '$only'" >&2; exit 2 ;;
  *) [ "$only" -le "$SPDK_SOURCES" ] || { echo "fetch-spdk: --source takes 1..$SPDK_SOURCES, not '$only'" >&2; exit 2; } ;;
esac

dest="$here/src/spdk"
dl="${SPDK_PMEM_DOWNLOAD_DIR:-$here/download}"
stamp="$dest/.spdk-pmem-source"

die() { echo "fetch-spdk: $*" >&2; exit 1; }

# The stamp holds the tree hash and the source it came from; with --source N
# a tree from another source is fetched again (same content, but asked for).
if [ -f "$stamp" ] && read -r have_hash have_source < "$stamp" &&
   [ "$have_hash" = "$SPDK_TREE_SHA256" ] && { [ -z "$only" ] || [ "$have_source" = "$only" ]; }; then
  [ "$check" = 1 ] || echo "fetch-spdk: SPDK $SPDK_VERSION source present at $dest (tree $SPDK_TREE_SHA256, source $have_source)"
  exit 0
fi
[ "$check" = 0 ] || exit 1

mirror=${SPDK_PMEM_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # The mirror the machine already uses (deb822 URIs: or one-line deb entries).
  mirror=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' |
           grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$mirror" ]; then
    mirror=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
             sed -E 's/\[[^]]*\]//' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  fi
  mirror=${mirror:-http://deb.debian.org/debian}
fi
mirror=${mirror%/}

# What each source answered, for the error when none worked.
report=()

# matches FILE N: FILE is source N's tarball (size, then SHA-256).
matches() {
  local size_var="SPDK_SRC$2_SIZE" sha_var="SPDK_SRC$2_SHA256"
  [ -f "$1" ] && [ "$(stat -L -c %s "$1")" = "${!size_var}" ] &&
    [ "$(sha256sum "$1" | cut -d' ' -f1)" = "${!sha_var}" ]
}

# Debian's pool path of a source package: pool/main/<l or libX>/<package>/.
pool_dir() {
  case "$1" in lib?*) echo "pool/main/${1:0:4}/$1" ;; *) echo "pool/main/${1:0:1}/$1" ;; esac
}

# download URL FILE: apt's own downloader (apt's proxy settings apply), else curl or wget.
download() {
  if [ -x /usr/lib/apt/apt-helper ]; then
    # As root apt would hand the download to its _apt user, who may not
    # reach the download directory.
    local sandbox=()
    [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
    /usr/lib/apt/apt-helper -o Debug::NoLocking=1 "${sandbox[@]}" download-file "$1" "$2" 2>&1 | tail -n 3
    return "${PIPESTATUS[0]}"
  elif command -v curl >/dev/null; then
    curl -fsSL -o "$2" "$1" 2>&1
  elif command -v wget >/dev/null; then
    wget -q -O "$2" "$1" 2>&1
  else
    echo "no downloader (apt-helper, curl or wget)"; return 1
  fi
}

# obtain N: leaves source N's verified tarball in $tarball, or says why not.
obtain() {
  local n=$1 file_var="SPDK_SRC$1_FILE" pkg_var="SPDK_SRC$1_PACKAGE" ver_var="SPDK_SRC$1_VERSION"
  local file=${!file_var} size_var="SPDK_SRC$1_SIZE" local_copy
  local want="$file (${!pkg_var} ${!ver_var}, $(( ${!size_var} / 1048576 )) MiB)"
  if [ -n "${SPDK_PMEM_SOURCE_TARBALL:-}" ]; then
    local_copy=$SPDK_PMEM_SOURCE_TARBALL
    [ -d "$local_copy" ] && local_copy="$local_copy/$file"
    if matches "$local_copy" "$n"; then
      tarball=$local_copy
      echo "fetch-spdk: source $n: $want from $local_copy"
      return 0
    fi
    if [ -e "$local_copy" ]; then
      report+=("source $n: $local_copy (SPDK_PMEM_SOURCE_TARBALL) is not $file: wrong size or SHA-256")
    else
      report+=("source $n: $local_copy (SPDK_PMEM_SOURCE_TARBALL) does not exist")
    fi
  fi
  tarball="$dl/$file"
  if matches "$tarball" "$n"; then
    echo "fetch-spdk: source $n: $want, already downloaded"
    return 0
  fi
  local url="$mirror/$(pool_dir "${!pkg_var}")/$file"
  echo "fetch-spdk: source $n: downloading $want from $url"
  mkdir -p "$dl"
  local out
  out=$(download "$url" "$tarball.partial") || {
    rm -f "$tarball.partial"
    report+=("source $n: $url: download failed: $(echo "$out" | tr '\n' ' ' | cut -c1-300)")
    echo "fetch-spdk: source $n: download failed"
    return 1
  }
  # apt's file: method links instead of copying.
  if [ -L "$tarball.partial" ]; then
    cp --remove-destination "$(readlink -f "$tarball.partial")" "$tarball.partial"
  fi
  if ! matches "$tarball.partial" "$n"; then
    report+=("source $n: $url: arrived with $(stat -c %s "$tarball.partial") bytes, SHA-256 $(sha256sum "$tarball.partial" | cut -d' ' -f1); want ${!size_var} bytes, SHA-256 $(eval echo "\$SPDK_SRC${n}_SHA256")")
    rm -f "$tarball.partial"
    echo "fetch-spdk: source $n: the file is not the pinned one"
    return 1
  fi
  mv "$tarball.partial" "$tarball"
}

# extract N: source N's SPDK tree into $dest, patched and verified.
extract() {
  local n=$1 sub_var="SPDK_SRC$1_SUBDIR" patch_var="SPDK_SRC$1_PATCH"
  local sub=${!sub_var} patch=${!patch_var} depth
  depth=$(echo "$sub" | tr -cd / | wc -c)
  echo "fetch-spdk: extracting $sub"
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  tar -xJf "$tarball" -C "$dest.partial" --strip-components=$((depth + 1)) "$sub"
  if [ -n "$patch" ]; then
    patch -p1 --batch --forward --quiet -d "$dest.partial" < "$here/$patch" ||
      die "applying vendor/$patch to source $n's tree failed"
  fi
  local got
  got=$(bash "$here/tree-hash.sh" "$dest.partial")
  [ "$got" = "$SPDK_TREE_SHA256" ] ||
    die "source $n's tree hashes to $got, not the pinned $SPDK_TREE_SHA256 (vendor/spdk-source.env); the tree is left at $dest.partial"
  echo "$got $n" > "$dest.partial/.spdk-pmem-source"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  echo "fetch-spdk: SPDK $SPDK_VERSION source at $dest (tree $got, source $n)"
}

for n in $(seq 1 "$SPDK_SOURCES"); do
  [ -z "$only" ] || [ "$n" = "$only" ] || continue
  if obtain "$n"; then
    extract "$n"
    exit 0
  fi
  [ -n "$only" ] || [ "$n" -eq "$SPDK_SOURCES" ] || echo "fetch-spdk: trying source $((n + 1))"
done

{
  echo "fetch-spdk: no source of SPDK $SPDK_VERSION could be had. Tried:"
  for line in "${report[@]}"; do echo "  - $line"; done
  echo "Put one of the tarballs listed in vendor/spdk-source.env in $dl (or name it with"
  echo "SPDK_PMEM_SOURCE_TARBALL=FILE-or-DIR), or set SPDK_PMEM_DEBIAN_MIRROR to a mirror that has it."
} >&2
exit 1
