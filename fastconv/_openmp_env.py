"""How long fastconv's OpenMP threads spin when idle, chosen before libgomp loads.

After each parallel region libgomp's idle threads spin (GOMP_SPINCOUNT, 300 000 polls by
default) before they sleep. That keeps the cores warm between two fastconv calls, but a
pipeline that alternates fastconv with other threaded code (NumPy's OpenBLAS, another
OpenMP runtime) finds its cores taken: on a 2-core machine a loop of conv2d (ResNet 56x56
layer) and a 384x384 float32 matmul took 8.4 ms per iteration with the default and 2.9 ms
with 3000 polls, while conv2d alone and chains of small conv2d calls ran as fast as before.

libgomp reads its environment once, when it is loaded, so fastconv sets GOMP_SPINCOUNT
while its first OpenMP module loads and removes it again: child processes and libraries
loaded later see the user's environment unchanged. A user's own GOMP_SPINCOUNT or
OMP_WAIT_POLICY wins. A libgomp that another library loaded before fastconv keeps its
setting (the wheels vendor a private libgomp, which fastconv always loads itself).
"""

from __future__ import annotations

import contextlib
import os

SPIN_COUNT = "3000"
USER_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


@contextlib.contextmanager
def short_spin_while_loading():
    """Within the block, GOMP_SPINCOUNT = SPIN_COUNT unless the user set a spin policy."""
    if any(name in os.environ for name in USER_SETTINGS):
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        yield
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)
