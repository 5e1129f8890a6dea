#!/usr/bin/env bash
# Build fastconv's extensions with AddressSanitizer (and optionally UBSan) in a temporary copy
# of the sources and run the test suite (or any command) against that build.
#
# Usage: tests/tools/run_asan.sh [--ubsan] [--keep | --reuse DIR] [COMMAND ...]
#   --ubsan      build with -fsanitize=address,undefined (UBSan reports abort the run)
#   --keep       keep the temporary build folder (its path is printed)
#   --reuse DIR  build in DIR and keep it; if DIR already holds an instrumented build, run
#                against it without rebuilding
#   COMMAND   run in the sanitized copy instead of the default
#             `python -m pytest tests -q -p no:cacheprovider --benchmark-skip`, e.g.
#             tests/tools/run_asan.sh python tests/tools/run_fuzz.py 20000
#
# How it works: setup.py's FASTCONV_SANITIZE adds -fsanitize=... -fno-omit-frame-pointer -g;
# stock CPython is not instrumented, so gcc's libasan is LD_PRELOADed (it must come first).
# Leak detection is off (CPython's own allocations at exit are not leaks of fastconv's);
# PYTHONMALLOC=malloc sends Python's small objects through the sanitizer's allocator too.
# Any sanitizer report makes the run fail. Needs gcc with libasan (Debian: libgcc-12-dev).
set -euo pipefail
sanitize=address
keep=0
work=
while [ $# -gt 0 ]; do
    case "$1" in
        --ubsan) sanitize=address,undefined; shift ;;
        --keep) keep=1; shift ;;
        --reuse) keep=1; work=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
        *) break ;;
    esac
done
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
[ -n "$work" ] || work=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-asan.XXXXXX")
if [ "$keep" = 0 ]; then trap 'rm -rf "$work"' EXIT; fi
log() { echo "run_asan: $*"; }

libasan=$(gcc -print-file-name=libasan.so)
[ -e "$libasan" ] || { log "gcc has no libasan ($libasan)"; exit 2; }
libasan=$(readlink -f "$libasan")
# libstdc++ preloaded too: otherwise ASan's __cxa_throw interceptor finds no real function when
# a C++ extension (e.g. matplotlib's) throws ("CHECK failed: real___cxa_throw").
libstdcxx=$(readlink -f "$(gcc -print-file-name=libstdc++.so.6)")

cd "$work"
if [ -f sanitize.txt ] && [ "$(cat sanitize.txt)" = "$sanitize" ]; then
    log "reusing the $sanitize build in $work"
else
    log "sources -> $work (FASTCONV_SANITIZE=$sanitize)"
    "$repo/tests/tools/copy_source_tree.sh" "$work"
    rm -f sanitize.txt fastconv/_*.so
    FASTCONV_SANITIZE=$sanitize "$python" setup.py build_ext --inplace > build.log 2>&1 ||
        { tail -40 build.log; log "FAILED: sanitizer build"; exit 1; }
    echo "$sanitize" > sanitize.txt
fi
for so in fastconv/_*.so; do
    # (not grep -q: it would stop reading, and nm's SIGPIPE would fail the pipeline)
    nm -D "$so" | grep __asan_report > /dev/null || { log "$so is not instrumented"; exit 1; }
done
log "built $(ls fastconv/_*.so | wc -l) instrumented extensions; libasan: $libasan"

if [ $# -eq 0 ]; then
    set -- "$python" -m pytest tests -q -p no:cacheprovider --benchmark-skip
fi
report="$work/sanitizer"
rm -f "$report".*
export LD_PRELOAD="$libasan:$libstdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path=$report:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$report:${UBSAN_OPTIONS:-}"
export PYTHONMALLOC=malloc
export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
log "running: $*"
code=0
"$@" || code=$?
unset LD_PRELOAD

if compgen -G "$report.*" > /dev/null; then
    log "SANITIZER REPORTS:"
    cat "$report".*
    [ "$code" -eq 0 ] && code=1
fi
if [ "$code" -ne 0 ]; then
    log "FAILED (exit $code)"
    exit "$code"
fi
log "OK: no sanitizer reports ($sanitize)"
[ "$keep" = 1 ] && log "build kept in $work"
exit 0
