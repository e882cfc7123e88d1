#!/usr/bin/env bash
# Builds the native core with sanitizers in its own virtual environment and runs tests under it.
#   scripts/sanitize.sh address,undefined [pytest args...]   (default: the core tests)
#   scripts/sanitize.sh thread tests/test_logger.py
# The interpreter is not instrumented, so the sanitizer runtime is preloaded; leak checking is
# off because CPython itself keeps memory until exit.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-address,undefined}"
shift || true
venv=".venv-sanitize-${kind//,/-}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# The core tests need only the package's own dependencies plus pytest and hypothesis.
DDL_SANITIZE="$kind" "$venv/bin/python" -m pip install -q -e . pytest hypothesis \
  -Cbuild-dir="build/sanitize-${kind//,/-}" -Ccmake.build-type=RelWithDebInfo
preload=""
case "$kind" in
  *address*) preload="$(gcc -print-file-name=libasan.so)" ;;
  *thread*) preload="$(gcc -print-file-name=libtsan.so)" ;;
esac
case "$kind" in
  *undefined*) preload="$preload:$(gcc -print-file-name=libubsan.so)" ;;
esac
if [ "$#" -eq 0 ]; then
  set -- tests/test_logger.py tests/test_bad_input.py tests/test_periodic.py \
    tests/test_periodic_property.py tests/test_writer_failure.py tests/test_pyreader.py \
    tests/test_corruption.py tests/test_legacy.py tests/test_crash.py tests/test_golden.py \
    tests/test_pyreader_property.py tests/test_collector.py tests/test_pyreader_v2.py \
    tests/test_settings.py
fi
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
# pyarrow's libraries are not instrumented: scripts/tsan.supp silences what TSan then misreads
# inside them (see docs/reliability.md); nothing of our native core is suppressed.
export TSAN_OPTIONS="halt_on_error=1:suppressions=$PWD/scripts/tsan.supp:${TSAN_OPTIONS:-}"
LD_PRELOAD="$preload" "$venv/bin/python" -m pytest -p no:cacheprovider --capture=sys -q "$@"
