#!/usr/bin/env python3
"""A long fuzzing session over fastconv's public API (tests/test_fuzz.py's properties).

    python tests/tools/run_fuzz.py                  # 20 000 examples per property, 1e5 in all
    python tests/tools/run_fuzz.py 2000             # a shorter session
    python tests/tools/run_fuzz.py 2000 relu max_pool2d   # only the properties named so
    tests/tools/run_asan.sh python tests/tools/run_fuzz.py   # the same under AddressSanitizer

Each example either matches the reference or raises ValueError/TypeError (test_fuzz.py's
contract); anything else -- another exception, a crash, a sanitizer report -- ends the run
with a non-zero status. Prints the outcome counts per operation at the end.

The package imported is the source tree's if it has compiled extensions (an in-place build,
e.g. the sanitizer build of run_asan.sh), else the installed one.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv):
    per_property = int(argv[1]) if len(argv) > 1 else 20_000
    os.environ["FASTCONV_FUZZ_EXAMPLES"] = str(per_property)
    os.environ.pop("CI", None)  # random, not derandomized, examples
    warnings.simplefilter("ignore")  # the references warn on odd (e.g. complex) inputs
    if list((ROOT / "fastconv").glob("_openmp_helpers*.so")):
        sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    import test_fuzz

    import fastconv

    print(f"fastconv {fastconv.__version__} from {Path(fastconv.__file__).parent}; "
          f"{per_property} examples per property", flush=True)
    properties = [test_fuzz.test_fuzz_conv2d_valid, test_fuzz.test_fuzz_conv2d_any,
                  test_fuzz.test_fuzz_max_pool2d, test_fuzz.test_fuzz_relu,
                  test_fuzz.test_fuzz_correlate_convolve, test_fuzz.test_fuzz_fused_layers]
    if len(argv) > 2:
        properties = [p for p in properties if any(name in p.__name__ for name in argv[2:])]
    failed = []
    start = time.monotonic()
    for prop in properties:
        before = sum(test_fuzz.OUTCOMES.values())
        t0 = time.monotonic()
        try:
            prop()
            status = "ok"
        except Exception:
            traceback.print_exc()
            failed.append(prop.__name__)
            status = "FAILED"
        ran = sum(test_fuzz.OUTCOMES.values()) - before
        print(f"{status:6} {prop.__name__:32} {ran:7d} examples in "
              f"{time.monotonic() - t0:7.1f} s", flush=True)

    print("\noutcomes (operation, result): count")
    for (op, outcome), count in sorted(test_fuzz.OUTCOMES.items()):
        print(f"  {op:12} {outcome:11} {count:7d}")
    total = sum(test_fuzz.OUTCOMES.values())
    print(f"total {total} examples in {time.monotonic() - start:.0f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "no failures"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
