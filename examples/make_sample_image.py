#!/usr/bin/env python
"""Draw fastconv's bundled sample image and write it to ``fastconv/data/sample.png``.

The scene (128x128, 8-bit gray) is synthetic, so it can ship under the project's licence and be
regenerated bit for bit: a bright rectangle (horizontal and vertical edges), a dark diamond
(diagonal edges), a ring around a disc (every orientation), the letters "CNN" with a wavy
underline (text-like strokes), a tilted grating and a speckled triangle (textures).

    python examples/make_sample_image.py            # rewrite fastconv/data/sample.png
    python examples/make_sample_image.py --check    # exit 1 if the stored file differs
    python examples/make_sample_image.py --out x.png --size 256
"""

import argparse
import sys
from pathlib import Path

try:
    from fastconv import _images
except ImportError:  # run from a source checkout that was built in place
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastconv import _images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(_images.SAMPLE_IMAGE_PATH),
                        help="where to write the PNG (default: %(default)s)")
    parser.add_argument("--size", type=int, default=128, help="side in pixels (default 128)")
    parser.add_argument("--check", action="store_true",
                        help="compare with the stored file instead of writing it")
    args = parser.parse_args(argv)
    pixels = _images.make_sample_image(args.size)
    if args.check:
        stored = _images.read_png(args.out)
        same = stored.shape == pixels.shape and (stored == pixels).all()
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from make_sample_image()'}")
        return 0 if same else 1
    _images.write_png(args.out, pixels)
    print(f"wrote {args.out}: {pixels.shape[1]}x{pixels.shape[0]} gray, "
          f"{Path(args.out).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
