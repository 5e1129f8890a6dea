"""Build and run-time configuration: version, OpenMP, and which instruction-set level runs.

The convolution kernels are compiled once per ISA level (``_conv_avx512``, ``_conv_avx2``,
``_conv_baseline``); the best level this CPU supports is chosen once, at import.
``FASTCONV_ISA=avx512|avx2|baseline`` forces a level (the test suite uses it to run every path).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys

from ._openmp_env import short_spin_while_loading

with short_spin_while_loading():  # loads libgomp: see _openmp_env
    from . import _cpu_features, _openmp_helpers
from ._version import __version__

ISA_LEVELS = ("avx512", "avx2", "baseline")


def _select_isa():
    supported = _cpu_features.supported_isa_levels()
    forced = os.environ.get("FASTCONV_ISA", "").strip().lower()
    if forced:
        if forced not in ISA_LEVELS:
            raise ImportError(f"FASTCONV_ISA must be one of {', '.join(ISA_LEVELS)}; got {forced!r}")
        if forced not in supported:
            raise ImportError(f"FASTCONV_ISA={forced} but this CPU supports only "
                              f"{', '.join(supported)}")
        return forced
    return supported[0]


SELECTED_ISA = _select_isa()


def load_kernels(family):
    """The kernel module of ``family`` (e.g. "conv") built for the selected ISA level."""
    for level in ISA_LEVELS[ISA_LEVELS.index(SELECTED_ISA):]:
        try:
            return importlib.import_module(f"{__package__}._{family}_{level}")
        except ImportError:  # e.g. off x86 only the baseline level is built
            continue
    raise ImportError(f"no compiled kernels for {__package__}._{family}_*; was the package built?")


def show_config(file=None):
    """Print version, build and run-time configuration (ISA level, OpenMP, threads)."""
    info = config_dict()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}} : {value}", file=file or sys.stdout)


def config_dict():
    """The facts ``show_config`` prints, as a dict."""
    import numpy as np

    return {
        "fastconv": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "isa_supported": ", ".join(_cpu_features.supported_isa_levels()),
        "isa_selected": SELECTED_ISA,
        "openmp": _openmp_helpers.openmp_enabled(),
        "default_threads": _openmp_helpers.get_max_threads(),
    }
