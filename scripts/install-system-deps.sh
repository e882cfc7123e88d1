#!/usr/bin/env bash
# Makes sure the native core has a zstd (headers and library) to build against. It never uses
# sudo unless asked (DDL_SUDO=1 or --sudo). docs/install.md describes every route.
#   - zstd already there (the system's, ZSTD_ROOT, CMAKE_PREFIX_PATH, pkg-config, an active conda
#     environment, or .deps/zstd): nothing to do.
#   - root on Debian/Ubuntu (CI on a fresh machine): apt-get install libzstd-dev.
#   - asked to use sudo: the same through sudo.
#   - otherwise, without root: Debian's libzstd-dev is fetched with `apt-get download` (apt checks
#     it against the signed archive index) and unpacked into .deps/zstd, which CMakeLists.txt
#     finds by itself; the extension links its static library, so .deps is needed only to build.
# It exits non-zero only when none of these can work, after saying what would.
set -euo pipefail
cd "$(dirname "$0")/.."

use_sudo="${DDL_SUDO:-0}"
for arg in "$@"; do
  case "$arg" in
    --sudo) use_sudo=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-system-deps.sh: unknown argument '$arg' (known: --sudo, --help)" >&2; exit 2 ;;
  esac
done

deps_prefix="$PWD/.deps/zstd"

has_header() { [ -n "$1" ] && [ -f "$1/zstd.h" ]; }

# Where CMakeLists.txt would find zstd.h; prints the directory, or fails.
find_zstd() {
  local dir prefix
  if [ -n "${ZSTD_ROOT:-}" ]; then
    # An explicit prefix is the only one CMake searches: report it even when it lacks zstd.h.
    has_header "$ZSTD_ROOT/include" && { echo "$ZSTD_ROOT/include"; return 0; }
    return 1
  fi
  local prefixes=()
  IFS=: read -r -a prefixes <<<"${CMAKE_PREFIX_PATH:-}"
  for prefix in "${prefixes[@]}"; do
    has_header "$prefix/include" && { echo "$prefix/include"; return 0; }
  done
  if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libzstd 2>/dev/null; then
    dir="$(pkg-config --variable=includedir libzstd)"
    has_header "$dir" && { echo "$dir"; return 0; }
  fi
  for dir in /usr/include /usr/local/include "${CONDA_PREFIX:+$CONDA_PREFIX/include}" \
             "$deps_prefix/include"; do
    has_header "$dir" && { echo "$dir"; return 0; }
  done
  return 1
}

choices() {
  cat >&2 <<EOF
disco-data-logger: $1
  Any one of these works without root (docs/install.md):
  - pip install disco-data-logger: the wheel carries its own zstd and needs no compiler;
  - ZSTD_ROOT=/prefix (a prefix with include/zstd.h and lib/libzstd.*), e.g. a conda
    environment (conda install zstd; an active one is found by itself) or \`module load zstd\`;
  - on Debian/Ubuntu, run this script again where \`apt-get download\` reaches the archive:
    it unpacks libzstd-dev into .deps/zstd;
  - with sudo rights: DDL_SUDO=1 bash scripts/install-system-deps.sh (apt-get install libzstd-dev).
EOF
}

if [ -n "${ZSTD_ROOT:-}" ] && ! find_zstd >/dev/null; then
  choices "ZSTD_ROOT=$ZSTD_ROOT has no include/zstd.h."
  exit 1
fi
if find_zstd >/dev/null; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] || [ "$use_sudo" = 1 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libzstd-dev
    exit 0
  fi
  if command -v dpkg-deb >/dev/null 2>&1; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if (cd "$work" && apt-get download libzstd-dev >/dev/null 2>"$work/apt.log"); then
      dpkg-deb -x "$work"/libzstd-dev_*.deb "$work/root"
      rm -rf "$deps_prefix"
      mkdir -p "$deps_prefix/include" "$deps_prefix/lib"
      cp "$work"/root/usr/include/*.h "$deps_prefix/include/"
      cp "$work"/root/usr/lib/*/libzstd.a "$deps_prefix/lib/"
      basename "$work"/libzstd-dev_*.deb >"$deps_prefix/SOURCE"
      cat >&2 <<EOF
disco-data-logger: no zstd headers here and not root, so no apt-get install: unpacked Debian's
  $(cat "$deps_prefix/SOURCE") into .deps/zstd, which the build finds by itself (no root needed).
  Other choices: DDL_SUDO=1 (apt-get install through sudo), ZSTD_ROOT=/prefix or a conda
  environment with zstd, or the wheel (pip install disco-data-logger); see docs/install.md.
EOF
      exit 0
    fi
    choices "no zstd headers here, not root, and apt-get download failed: $(tail -n 1 "$work/apt.log")"
    exit 1
  fi
fi
if [ "$(id -u)" -eq 0 ]; then
  choices "no zstd headers here, and this script installs them only on Debian/Ubuntu: install
  libzstd-devel (dnf/yum), zstd-dev (apk) or zstd (brew, conda) with the system's tools."
else
  choices "no zstd headers here, not root, and no apt-get to fetch Debian's libzstd-dev with."
fi
exit 1
