#!/usr/bin/env bash
# Build minitensor._C with AddressSanitizer + UndefinedBehaviorSanitizer in a separate directory and run the
# kernel tests against that build. Any sanitizer report aborts the run (non-zero exit). The normal build in
# the source tree stays optimised and untouched. Usage: .ci/sanitize.sh PYTHON
set -euo pipefail
PY="${1:?usage: .ci/sanitize.sh PYTHON}"
# absolute path without resolving symlinks (a venv's python is a symlink to the base interpreter), since the
# build below runs from another directory
case "$PY" in /*) ;; */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
cd "$(dirname "$0")/.."
SAN_DIR="build-sanitize"
rm -rf "$SAN_DIR"
mkdir -p "$SAN_DIR"
cp -r minitensor csrc models setup.py pyproject.toml README.md "$SAN_DIR"/
mkdir -p "$SAN_DIR/tests" && cp -r tests/conftest.py tests/__init__.py tests/kernels "$SAN_DIR/tests/" 2>/dev/null || cp -r tests/conftest.py tests/kernels "$SAN_DIR/tests/"
find "$SAN_DIR" -name "*.so" -delete
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
(cd "$SAN_DIR" && CFLAGS="$FLAGS" CXXFLAGS="$FLAGS" LDFLAGS="-fsanitize=address,undefined" \
    "$PY" setup.py build_ext --inplace > build.log 2>&1) || { cat "$SAN_DIR/build.log"; exit 1; }
SO=$(ls "$SAN_DIR"/minitensor/_C*.so 2>/dev/null) || { echo "sanitized build of minitensor._C failed:"; cat "$SAN_DIR/build.log"; exit 1; }
# make sure the module really is instrumented (a silently ignored flag would make this whole run vacuous)
nm -D "$SO" | grep "__asan_report" > /dev/null || { echo "minitensor._C was built without AddressSanitizer"; exit 1; }
nm -D "$SO" | grep "__ubsan_handle" > /dev/null || { echo "minitensor._C was built without UndefinedBehaviorSanitizer"; exit 1; }
cd "$SAN_DIR"
# Python itself is not instrumented, so the sanitizer runtimes are preloaded; reports go to sanitizer.log.*
# (pytest captures stderr, and an abort would lose it) and are printed when the run fails.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$PWD/sanitizer.log"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$PWD/sanitizer.log"
"$PY" -c "import minitensor._C as C; assert C.__file__.startswith('$PWD'), C.__file__; print('sanitized kernels:', C.__file__)"
status=0
"$PY" -m pytest -q -p no:cacheprovider tests/kernels || status=$?
if [ "$status" -ne 0 ] || ls sanitizer.log.* > /dev/null 2>&1; then
    cat sanitizer.log.* 2>/dev/null || true
    echo "sanitizer run failed (exit $status)"
    exit $(( status == 0 ? 1 : status ))
fi
