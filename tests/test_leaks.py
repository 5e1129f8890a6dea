"""Leak checks: many calls of each op leave the process's memory flat.

Three signals per op, after a warm-up: resident memory (RSS, which a leaked output or a leaked
kernel scratch buffer moves by megabytes), the number of objects the garbage collector tracks
(a leaked memoryview or tuple per call) and the reference counts of the arrays passed in (a
kernel that keeps a reference). CI runs ``CALLS`` calls per op; the script mode runs more::

    python tests/test_leaks.py 100000        # every op, 100 000 calls each, prints the RSS trail
"""

from __future__ import annotations

import gc
import glob
import os
import sys

if __name__ == "__main__":  # script mode: prefer the source tree if it has an in-place build
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if glob.glob(os.path.join(_ROOT, "fastconv", "_openmp_helpers*.so")):
        sys.path.insert(0, _ROOT)

import numpy as np
import pytest

import fastconv

CALLS = 2000
WARMUP = 300
RSS_TOLERANCE = 8 * 2**20  # bytes; one leaked output per call would be >= 2000 * 16 KiB
OBJECT_TOLERANCE = 50
# AddressSanitizer keeps freed memory in quarantine, so RSS grows without a leak there.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def rss_bytes():
    """Resident set size of this process (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        psutil = pytest.importorskip("psutil")
        return psutil.Process().memory_info().rss


def make_ops():
    """``{name: (thunk, arrays passed in)}``; each call allocates >= 16 KiB of output."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 8, 32, 32)).astype(np.float32)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    x64 = rng.standard_normal((1, 4, 40, 40))
    w64 = rng.standard_normal((4, 1, 5, 5))
    big = rng.standard_normal(1 << 18).astype(np.float32)  # parallel path
    small = rng.standard_normal(5000)
    out_relu = np.empty_like(small)
    out_conv = np.empty((2, 8, 32, 32), np.float32)
    image = rng.standard_normal((64, 64))
    kernel = rng.standard_normal((5, 5))
    layer = fastconv.layers.Conv2D(w, b, padding=1)
    return {
        "conv2d": (lambda: fastconv.conv2d(x, w, b, padding=1), (x, w, b)),
        "conv2d out= relu": (lambda: fastconv.conv2d(x, w, b, padding=1, activation="relu",
                                                     out=out_conv), (x, w, b, out_conv)),
        "conv2d NHWC stride": (lambda: fastconv.conv2d(x_nhwc, w, stride=2, layout="NHWC"),
                               (x_nhwc, w)),
        "conv2d f64 depthwise reflect": (lambda: fastconv.conv2d(
            x64, w64, padding=2, groups=4, padding_mode="reflect"), (x64, w64)),
        "conv2d error": (lambda: _expect_error(lambda: fastconv.conv2d(x, w[:, :3])), (x, w)),
        "Conv2D layer": (lambda: layer(x), (x,)),
        "relu": (lambda: fastconv.relu(big), (big,)),
        "relu out=": (lambda: fastconv.relu(small, out=out_relu), (small, out_relu)),
        "max_pool2d": (lambda: fastconv.max_pool2d(x, 2), (x,)),
        "max_pool2d indices": (lambda: fastconv.max_pool2d(x, 3, stride=1, padding=1,
                                                           return_indices=True), (x,)),
        "max_pool2d NHWC": (lambda: fastconv.max_pool2d(x_nhwc, 2, layout="NHWC"), (x_nhwc,)),
        "max_pool2d error": (lambda: _expect_error(lambda: fastconv.max_pool2d(x, 2, padding=2)),
                             (x,)),
        "correlate2d": (lambda: fastconv.correlate2d(image, kernel, "same"), (image, kernel)),
        "convolve2d": (lambda: fastconv.convolve2d(image, kernel, "full"), (image, kernel)),
    }


def _expect_error(call):
    try:
        call()
    except (ValueError, TypeError):
        return
    raise AssertionError("expected ValueError/TypeError")


def measure(call, arrays, calls, report=None):
    """Run ``call`` ``calls`` times after a warm-up; return (RSS growth, object growth,
    reference count changes of ``arrays``)."""
    for _ in range(WARMUP):
        call()
    gc.collect()
    refs = [sys.getrefcount(arrays[i]) for i in range(len(arrays))]
    objects = len(gc.get_objects())
    rss = rss_bytes()
    step = max(1, calls // 10)
    for i in range(1, calls + 1):
        call()
        if report is not None and i % step == 0:
            report(i, rss_bytes() - rss)
    gc.collect()
    # (indexing, not zip: zip's reused result tuple would hold one extra reference)
    ref_changes = [sys.getrefcount(arrays[i]) - refs[i] for i in range(len(arrays))]
    return rss_bytes() - rss, len(gc.get_objects()) - objects, ref_changes


OPS = make_ops()


@pytest.mark.parametrize("name", list(OPS))
def test_memory_stays_flat(name):
    call, arrays = OPS[name]
    rss_growth, object_growth, ref_changes = measure(call, arrays, CALLS)
    assert ref_changes == [0] * len(arrays), f"reference counts of the inputs grew: {ref_changes}"
    assert object_growth <= OBJECT_TOLERANCE, f"{object_growth} more gc-tracked objects"
    assert UNDER_ASAN or rss_growth <= RSS_TOLERANCE, f"RSS grew by {rss_growth / 2**20:.1f} MiB"


@pytest.mark.skipif(UNDER_ASAN, reason="RSS grows under AddressSanitizer anyway")
def test_the_check_catches_a_leak():
    """The control: a call that keeps its output is caught by the RSS check."""
    kept = []
    x = np.ones((2, 8, 32, 32), np.float32)
    rss_growth, _, _ = measure(lambda: kept.append(fastconv.relu(x)), (x,), CALLS)
    assert rss_growth > RSS_TOLERANCE


def main(argv):
    calls = int(argv[1]) if len(argv) > 1 else 100_000
    failed = []
    for name, (call, arrays) in OPS.items():
        trail = []

        def report(i, grown, trail=trail):
            trail.append(f"{grown / 2**20:+.1f}")

        rss_growth, object_growth, ref_changes = measure(call, arrays, calls, report=report)
        ok = (rss_growth <= RSS_TOLERANCE and object_growth <= OBJECT_TOLERANCE
              and ref_changes == [0] * len(arrays))
        print(f"{'ok  ' if ok else 'LEAK'} {name:<30} {calls} calls: RSS {rss_growth / 2**20:+.2f} "
              f"MiB (trail {' '.join(trail)}), objects {object_growth:+d}, refs {ref_changes}",
              flush=True)
        if not ok:
            failed.append(name)
    print("leaks in: " + ", ".join(failed) if failed else "no leaks")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
