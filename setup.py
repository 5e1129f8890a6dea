"""Build fastconv's Cython kernels.

Every ``fastconv/_*.pyx`` is one extension module. Kernels that are compiled once per
instruction-set level end in ``_avx512``, ``_avx2`` or ``_baseline``; the package picks the
best one the CPU supports at import time, so wheels stay portable (no ``-march=native``).

Environment switches:
  FASTCONV_REQUIRE_OPENMP=1   fail the build instead of building serial kernels
  FASTCONV_BOUNDSCHECK=1      turn Cython bounds/wraparound checks back on (debugging)
  FASTCONV_SANITIZE=address   build with -fsanitize=<value> (tests/tools/run_asan.sh runs the suite)
  FASTCONV_MARCH_NATIVE=1     add -march=native (local experiments only, never for wheels)
  FASTCONV_BUILD_ONLY=conv,pool   build only these kernel families (development rebuilds)
"""

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
from glob import glob
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
IS_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")

ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "baseline": [],
}

COMPILER_DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}
if os.environ.get("FASTCONV_BOUNDSCHECK") == "1":
    COMPILER_DIRECTIVES.update(boundscheck=True, wraparound=True, initializedcheck=True)


def _openmp_flags():
    """Return the OpenMP compile/link flag list if the compiler builds and runs OpenMP code."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return None
    program = textwrap.dedent(
        """
        #include <omp.h>
        #include <stdio.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            printf("%d", n == omp_get_max_threads());
            return 0;
        }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        exe = Path(tmp) / "probe"
        src.write_text(program)
        try:
            subprocess.run([cc, "-fopenmp", str(src), "-o", str(exe)], check=True,
                           capture_output=True, timeout=120)
            out = subprocess.run([str(exe)], check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    return ["-fopenmp"] if out.stdout.strip() == b"1" else None


def _extensions():
    openmp = _openmp_flags()
    if openmp is None:
        message = ("fastconv: the C compiler cannot build and run an OpenMP program; "
                   "building SERIAL kernels (every call will use one thread).")
        if os.environ.get("FASTCONV_REQUIRE_OPENMP") == "1":
            sys.exit(message + " FASTCONV_REQUIRE_OPENMP=1 makes this fatal.")
        print("\n" + "!" * 78 + "\n" + message + "\n" + "!" * 78 + "\n", file=sys.stderr)
        openmp = []

    # -fno-tree-loop-distribute-patterns: GCC would turn the kernels' short row copies (one
    # output row, often 14-56 elements) into memmove calls, 35% of a 1x1 layer's time on AVX2.
    base_flags = ["-O3", "-fno-math-errno", "-fno-tree-loop-distribute-patterns",
                  "-Wno-unused-function", "-Wno-unreachable-code"]
    if os.environ.get("FASTCONV_MARCH_NATIVE") == "1":
        base_flags.append("-march=native")
    link_flags = list(openmp)
    sanitize = os.environ.get("FASTCONV_SANITIZE")
    if sanitize:
        san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
        base_flags += san
        link_flags += san

    only = [f"_{family}" for family in os.environ.get("FASTCONV_BUILD_ONLY", "").split(",") if family]
    extensions = []
    for pyx in sorted(glob("fastconv/_*.pyx")):
        stem = Path(pyx).stem
        if only and not any(stem.startswith(prefix) for prefix in only):
            continue
        isa = stem.rsplit("_", 1)[-1] if stem.rsplit("_", 1)[-1] in ISA_FLAGS else None
        if isa in ("avx512", "avx2") and not IS_X86:
            continue  # only the baseline level exists off x86
        flags = base_flags + openmp + (ISA_FLAGS[isa] if isa else [])
        extensions.append(Extension(
            f"fastconv.{stem}",
            [pyx],
            # depends also puts these in the sdist (sources become the generated .c files)
            depends=[pyx] + sorted(glob("fastconv/*.h") + glob("fastconv/*.pxi")),
            include_dirs=[np.get_include(), "fastconv"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=flags,
            extra_link_args=link_flags,
        ))
    return cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES,
                     nthreads=int(os.environ.get("FASTCONV_CYTHON_JOBS", "0")))


setup(ext_modules=_extensions())
