#!/usr/bin/env python
"""Compare fastconv with PyTorch and ONNX Runtime on this machine; prints a markdown table.

A thin script over ``fastconv._bench`` (the same engine as ``fastconv bench``)::

    python bench/compare.py --peers                 # public suite + ReLU + max_pool2d
    python bench/compare.py --peers --extra         # plus layers nobody tuned for
    python bench/compare.py --peers --dtype float64 --rounds 10
    python bench/compare.py --peers --layers resnet_56_c64_k3,vgg_224_c64to64_k3 --ops conv

Every implementation runs in this process with the same thread count (default 2), in
interleaved rounds; the minimum over rounds is reported. Run it on a quiet machine (or under
``flock /tmp/fastconv-bench.lock``): concurrent timings lie.
"""

import sys
from pathlib import Path

try:
    from fastconv._bench import main
except ImportError:  # a source checkout built in place (setup.py build_ext --inplace)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastconv._bench import main

if __name__ == "__main__":
    sys.exit(main())
