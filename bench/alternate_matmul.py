#!/usr/bin/env python
"""A pipeline that alternates fastconv with NumPy's threaded matmul: who gets the cores?

Idle OpenMP (libgomp) and OpenBLAS threads spin for a while before they sleep, and on a
small machine a spinning pool takes the cores the other library's threads need. fastconv
shortens libgomp's spin while it loads (fastconv/_openmp_env.py); this script shows the
effect by timing, in fresh interpreters, with libgomp's default spin and with fastconv's::

    python bench/alternate_matmul.py

Columns: conv2d alone (1x64x56x56 -> 64, 3x3), a 384x384 float32 matmul alone, the two
alternating, and a chain of 5 small conv2d calls (1x16x28x28 -> 16). Minimum of 7 rounds.
Run it on a quiet machine.
"""

import os
import subprocess
import sys

SETTINGS = [
    ("libgomp default (GOMP_SPINCOUNT=300000)", {"GOMP_SPINCOUNT": "300000"}),
    ("fastconv default", {}),
    ("OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"}),
]


def measure():
    import numpy as np

    try:
        import fastconv
    except ImportError:  # a source checkout built in place
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import fastconv
    from fastconv._bench import seconds_per_call

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 56, 56), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    a = rng.standard_normal((384, 384), dtype=np.float32)
    small = rng.standard_normal((1, 16, 28, 28), dtype=np.float32)
    w_small = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)

    def conv():
        fastconv.conv2d(x, w, padding=1)

    def matmul():
        a @ a

    def both():
        conv()
        matmul()

    def chain():
        for _ in range(5):
            fastconv.conv2d(small, w_small, padding=1)

    return [seconds_per_call(fn, calls=20) * 1e3 for fn in (conv, matmul, both, chain)]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(" ".join(f"{t:.3f}" for t in measure()))
        return 0
    print("| setting | conv2d ms | matmul ms | conv2d + matmul ms | 5 small conv2d ms |")
    print("|---|--:|--:|--:|--:|")
    for name, settings in SETTINGS:
        env = {k: v for k, v in os.environ.items()
               if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
        env.update(settings)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        print(f"| {name} | " + " | ".join(out) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
