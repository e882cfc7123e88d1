#!/usr/bin/env bash
# Installs the system packages the native core builds against (the zstd headers and library),
# only when they are missing. Debian/Ubuntu via apt-get; elsewhere it says what to install.
set -euo pipefail

have_zstd() {
  for dir in /usr/include /usr/local/include; do
    [ -f "$dir/zstd.h" ] && return 0
  done
  return 1
}

if have_zstd; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libzstd-dev pkg-config
else
  echo "disco-data-logger needs the zstd development files: install libzstd-dev / zstd-devel / zstd" >&2
  exit 1
fi
