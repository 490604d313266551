#!/usr/bin/env bash
# Fetches the pinned SPDK source (vendor/spdk-source.env) and extracts only its
# src/spdk into vendor/src/spdk. Idempotent: nothing is downloaded when the
# verified tarball or the extracted tree is already there.
#
# apt-get runs with a private configuration (one deb-src line for the pinned
# suite, a private lists directory); the machine's own apt sources are untouched.
#
# Environment: SPDK_PMEM_DOWNLOAD_DIR (default vendor/download) holds the tarball.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=vendor/spdk-source.env
. "$here/spdk-source.env"

dest="$here/src/spdk"
dl="${SPDK_PMEM_DOWNLOAD_DIR:-$here/download}"
tarball="$dl/$SPDK_SRC_FILE"
stamp="$dest/.spdk-pmem-source"

die() { echo "fetch-spdk: $*" >&2; exit 1; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$SPDK_SRC_SHA256" ]; then
  echo "fetch-spdk: SPDK $SPDK_VERSION source present at $dest"
  exit 0
fi

verified() {
  [ -f "$tarball" ] && [ "$(stat -c %s "$tarball")" = "$SPDK_SRC_SIZE" ] &&
    [ "$(sha256sum "$tarball" | cut -d' ' -f1)" = "$SPDK_SRC_SHA256" ]
}

if ! verified; then
  command -v apt-get >/dev/null || die "apt-get not found; download $SPDK_SRC_FILE (source package $SPDK_SRC_PACKAGE $SPDK_SRC_PACKAGE_VERSION) by hand into $dl"
  [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] ||
    die "Debian's archive keyring is missing: apt-get install debian-archive-keyring (scripts/setup-host.sh does it)"

  # The mirror the machine already uses (deb822 URIs: or one-line deb entries).
  uri=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' |
        grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
          sed -E 's/\[[^]]*\]//' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  fi
  uri=${uri:-http://deb.debian.org/debian}

  apt_dir=$(mktemp -d)
  trap 'rm -rf "$apt_dir"' EXIT
  mkdir -p "$apt_dir/lists/partial" "$dl"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $SPDK_SRC_SUITE main" \
    > "$apt_dir/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o Debug::NoLocking=1 -q)
  echo "fetch-spdk: downloading $SPDK_SRC_FILE ($((SPDK_SRC_SIZE / 1048576)) MiB) from $uri $SPDK_SRC_SUITE"
  apt-get "${opts[@]}" update >"$apt_dir/update.log" 2>&1 ||
    die "apt-get update on the private deb-src list failed (network?):
$(tail -n 5 "$apt_dir/update.log")"
  # The mirror may lack the .dsc, making apt-get fail although the tarball
  # arrived: the file and its checksum decide, not apt-get's exit code.
  (cd "$dl" && apt-get "${opts[@]}" source --download-only \
      "$SPDK_SRC_PACKAGE=$SPDK_SRC_PACKAGE_VERSION") >"$apt_dir/source.log" 2>&1 || true
  verified || die "$SPDK_SRC_FILE did not arrive intact in $dl (want sha256 $SPDK_SRC_SHA256).
apt-get said:
$(tail -n 8 "$apt_dir/source.log")
Place the file there by hand and run this script again."
  rm -f "$dl"/*.dsc "$dl"/*.debian.tar.* 2>/dev/null || true
fi

echo "fetch-spdk: extracting $SPDK_SRC_SUBDIR"
rm -rf "$dest" "$dest.partial"
mkdir -p "$dest.partial"
tar -xJf "$tarball" -C "$dest.partial" --strip-components=3 "$SPDK_SRC_SUBDIR"
grep -q "SPDK_VERSION_MAJOR[[:space:]]*${SPDK_VERSION%%.*}" "$dest.partial/include/spdk/version.h" ||
  die "the extracted tree is not SPDK $SPDK_VERSION"
echo "$SPDK_SRC_SHA256" > "$dest.partial/.spdk-pmem-source"
mv "$dest.partial" "$dest"
echo "fetch-spdk: SPDK $SPDK_VERSION source at $dest"
