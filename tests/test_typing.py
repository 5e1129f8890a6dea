"""Typing: every extension ships a .pyi stub that matches it, the package ships py.typed, and
mypy type-checks code written against the public API. Skipped when mypy is not installed
(``pip install mypy``).

Run by hand: ``python -m mypy.stubtest fastconv._openmp_helpers ...`` and
``python -m mypy -p fastconv``.
"""

from __future__ import annotations

import importlib
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastconv
from fastconv import _cpu_features
from fastconv._config import ISA_LEVELS

PACKAGE = Path(fastconv.__file__).parent
PACKAGE_PARENT = PACKAGE.parent


def extension_modules():
    """Names of the compiled modules (``_*.so`` next to the package), e.g. ``_conv_avx512``."""
    return sorted({p.name.split(".")[0] for p in PACKAGE.glob("_*.so")}
                  | {p.name.split(".")[0] for p in PACKAGE.glob("_*.pyd")})


def _isa_of(module):
    """The instruction-set level a kernel module is built for, or None (e.g. _cpu_features)."""
    level = module.rsplit("_", 1)[-1]
    return level if level in ISA_LEVELS else None


def test_py_typed_is_shipped():
    assert (PACKAGE / "py.typed").is_file()


def test_every_extension_has_a_stub():
    modules = extension_modules()
    assert modules, f"no compiled extensions in {PACKAGE}"
    missing = [m for m in modules if not (PACKAGE / f"{m}.pyi").is_file()]
    assert not missing, f"extension modules without a .pyi stub: {missing}"
    # In a source tree every .pyx is an extension; the stubs must cover those too.
    missing_pyx = [p.stem for p in PACKAGE.glob("_*.pyx") if not p.with_suffix(".pyi").is_file()]
    assert not missing_pyx, f".pyx files without a .pyi stub: {missing_pyx}"


mypy = pytest.importorskip("mypy", reason="mypy is not installed")


def run_mypy(args, tmp_path):
    env = dict(os.environ)
    site_dirs = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    if PACKAGE_PARENT.resolve() not in site_dirs:  # a source tree: point mypy at it
        env.update(PYTHONPATH=str(PACKAGE_PARENT), MYPYPATH=str(PACKAGE_PARENT))
    config = tmp_path / "mypy.ini"
    config.write_text(textwrap.dedent("""
        [mypy]
        python_version = 3.11
        warn_unused_ignores = True
        [mypy-scipy.*,torch.*,dask.*,distributed.*,matplotlib.*,PIL.*,threadpoolctl.*]
        ignore_missing_imports = True
    """))
    option = "--mypy-config-file" if args[0] == "mypy.stubtest" else "--config-file"
    cmd = [sys.executable, "-m", *args, option, str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=300,
                          cwd=tmp_path)


def test_stubs_match_the_compiled_modules(tmp_path):
    """mypy's stubtest imports each extension and compares it with its stub (names,
    parameters), so a kernel signature change without a stub change fails here."""
    modules = [m for m in extension_modules() if (PACKAGE / f"{m}.pyi").is_file()]
    # A kernel module built for an instruction set this CPU lacks cannot be imported (its
    # module init may already use those instructions: SIGILL). Its stub must then read as
    # its sibling's at a level this CPU has, which stubtest checks below.
    supported = _cpu_features.supported_isa_levels()
    foreign = [m for m in modules if _isa_of(m) not in (None, *supported)]
    for module in foreign:
        sibling = module.rsplit("_", 1)[0] + f"_{supported[0]}"
        assert sibling in modules, f"{module}: no sibling built for {supported[0]} to compare"
        assert ((PACKAGE / f"{module}.pyi").read_text().replace(_isa_of(module), "ISA")
                == (PACKAGE / f"{sibling}.pyi").read_text().replace(supported[0], "ISA"))
    modules = [m for m in modules if m not in foreign]
    for module in modules:
        importlib.import_module(f"fastconv.{module}")  # skip nothing silently: must import
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text("fastconv\\..*\\.__test__\n")  # Cython's doctest dict
    proc = run_mypy(["mypy.stubtest", "--concise", "--allowlist", str(allowlist),
                     *[f"fastconv.{m}" for m in modules]], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


USER_CODE = '''
import numpy as np
import numpy.typing as npt
import fastconv
from fastconv import layers
from fastconv import _openmp_helpers, _cpu_features

x: npt.NDArray[np.float32] = np.zeros((1, 3, 8, 8), np.float32)
w = np.zeros((4, 3, 3, 3), np.float32)
y = fastconv.conv2d(x, w, padding="same", num_threads=2)
z = fastconv.max_pool2d(fastconv.relu(y), 2)
c = fastconv.correlate2d(x[0, 0], w[0, 0], mode="full")
n: int = _openmp_helpers.get_max_threads()
enabled: bool = _openmp_helpers.openmp_enabled()
levels: list[str] = _cpu_features.supported_isa_levels()
model = layers.Sequential([layers.Conv2D(w), layers.ReLU(), layers.MaxPool2D(2)])
print(fastconv.__version__, fastconv.output_size(8, 3), model(x).shape, z.shape, c.shape)
'''


def test_mypy_accepts_code_using_the_public_api(tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE)
    proc = run_mypy(["mypy", "user.py"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_uses_the_stubs(tmp_path):
    """The control: a type error against a stub is reported, so the stubs are what mypy reads."""
    (tmp_path / "bad.py").write_text("from fastconv import _openmp_helpers\n"
                                     "s: str = _openmp_helpers.get_max_threads()\n")
    proc = run_mypy(["mypy", "bad.py"], tmp_path)
    assert proc.returncode == 1 and "Incompatible types in assignment" in proc.stdout, (
        proc.stdout + proc.stderr)


def test_mypy_checks_the_public_modules(tmp_path):
    public = ["fastconv", "fastconv.conv", "fastconv.pool", "fastconv.activation",
              "fastconv.layers", "fastconv.reference", "fastconv._validation",
              "fastconv._config"]
    args = ["mypy"]
    for module in public:
        args += ["-m", module]
    proc = run_mypy(args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
