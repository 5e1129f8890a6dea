"""Images without dependencies: a PNG encoder and decoder, image loading, a tiny bitmap font and
the bundled sample image.

Only NumPy and the standard library (``zlib``, ``struct``) are used, so ``fastconv demo`` can read
and write pictures on a machine where ``pip install fastconv`` installed nothing but NumPy.
JPEG (and PNG features the decoder leaves out, such as interlacing) are read with Pillow when it
is installed (``pip install fastconv[plots]``).

PNG support
-----------
Writing: 8-bit grayscale, gray + alpha, RGB and RGBA, non-interlaced, each row filtered with
the PNG filter that compresses it best (the usual "minimum sum of absolute differences" rule).

Reading: every colour type (gray, RGB, palette, gray + alpha, RGBA) at every bit depth PNG allows
(1, 2, 4, 8, 16), non-interlaced. CRCs are checked; anything malformed or unsupported raises
:class:`ImageError` with a one-line message.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "GLYPH_HEIGHT",
    "GLYPH_WIDTH",
    "SAMPLE_IMAGE_PATH",
    "ImageError",
    "decode_png",
    "downscale",
    "draw_text",
    "encode_png",
    "load_image",
    "make_sample_image",
    "read_image",
    "read_png",
    "sample_image",
    "text_width",
    "to_gray",
    "to_rgb",
    "write_png",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

SAMPLE_IMAGE_PATH = Path(__file__).resolve().parent / "data" / "sample.png"

# Images larger than this (pixels) go to Pillow when it is installed: the pure-Python
# un-filtering of the "average" and "Paeth" PNG filters runs at about a megabyte per second.
_LARGE_IMAGE_PIXELS = 2_000_000

# colour type -> (channels, allowed bit depths)
_COLOR_TYPES = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)),
                4: (2, (8, 16)), 6: (4, (8, 16))}
_COLOR_TYPE_OF_CHANNELS = {1: 0, 2: 4, 3: 2, 4: 6}


class ImageError(ValueError):
    """An image that cannot be read or written; the message is one line meant for the user."""


class _Unsupported(ImageError):
    """A valid PNG using a feature the built-in decoder leaves out (Pillow may read it)."""


# --------------------------------------------------------------------------------------------
# PNG encoder


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _filter_rows(pixels, bpp):
    """Filtered scanlines: each row prefixed by the filter byte (0-4) that minimises the sum of
    absolute values of the filtered bytes (read as signed), as libpng's heuristic does.

    pixels : uint8 array of shape (H, W * bpp)      # IN
    returns : uint8 array of shape (H, 1 + W * bpp)
    """
    raw = pixels.astype(np.int16)
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    upleft = np.zeros_like(raw)
    upleft[1:, bpp:] = raw[:-1, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    candidates = np.stack([raw, raw - left, raw - up, raw - (left + up) // 2, raw - paeth])
    candidates = (candidates & 0xFF).astype(np.uint8)  # (5, H, W * bpp)
    cost = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)  # (5, H)
    best = np.argmin(cost, axis=0)  # (H,)
    rows = candidates[best, np.arange(raw.shape[0])]
    return np.concatenate([best.astype(np.uint8)[:, None], rows], axis=1)


def encode_png(image, *, compress_level=9):
    """PNG file contents for an 8-bit image.

    Parameters
    ----------
    image : uint8 array of shape (H, W) gray, (H, W, 1), (H, W, 2) gray + alpha, (H, W, 3) RGB
        or (H, W, 4) RGBA. Boolean arrays are written as 0/255 gray.
    compress_level : int, default 9
        zlib level.

    Returns
    -------
    bytes

    Examples
    --------
    >>> import numpy as np
    >>> data = encode_png(np.zeros((2, 3), np.uint8))
    >>> data[:8] == PNG_SIGNATURE, decode_png(data).shape
    (True, (2, 3))
    """
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        raise ImageError(f"encode_png needs a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in _COLOR_TYPE_OF_CHANNELS:
        raise ImageError(f"encode_png needs shape (H, W) or (H, W, 1|2|3|4), got {image.shape}")
    height, width, channels = image.shape
    if height < 1 or width < 1 or height >= 2**31 or width >= 2**31:
        raise ImageError(f"a PNG must have 1 to 2**31 - 1 rows and columns, got {image.shape}")
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE_OF_CHANNELS[channels], 0, 0, 0)
    rows = _filter_rows(np.ascontiguousarray(image).reshape(height, width * channels), channels)
    return b"".join([PNG_SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"tEXt", b"Software\x00fastconv"),
                     _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)),
                     _chunk(b"IEND", b"")])


def write_png(path, image, **kwargs):
    """Write ``image`` (see :func:`encode_png`) to ``path``; return the path."""
    data = encode_png(image, **kwargs)
    try:
        with open(path, "wb") as file:
            file.write(data)
    except OSError as exc:
        raise ImageError(f"cannot write {os.fspath(path)!r}: {exc.strerror or exc}") from None
    return path


# --------------------------------------------------------------------------------------------
# PNG decoder


def _unfilter(data, height, stride, bpp):
    """Undo the per-row PNG filters.

    data : bytes of length height * (1 + stride)        # IN (decompressed IDAT)
    returns : uint8 array of shape (height, stride)
    """
    rows = np.frombuffer(data, np.uint8).reshape(height, 1 + stride)
    kinds = rows[:, 0]
    if kinds.size and kinds.max() > 4:
        raise ImageError(f"corrupt PNG: unknown row filter {int(kinds.max())}")
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = kinds[y], rows[y, 1:]
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = line + prev  # uint8 arithmetic wraps modulo 256, as PNG wants
        elif kind == 1 or (kind == 4 and y == 0):  # Paeth on the first row is Sub
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        else:  # 3 (average) and 4 (Paeth) depend on the decoded left neighbour: a plain loop
            cur_b = bytearray(line.tobytes())
            up = prev.tolist()
            if kind == 3:
                for i in range(min(bpp, stride)):
                    cur_b[i] = (cur_b[i] + (up[i] >> 1)) & 0xFF
                for i in range(bpp, stride):
                    cur_b[i] = (cur_b[i] + ((cur_b[i - bpp] + up[i]) >> 1)) & 0xFF
            else:
                for i in range(min(bpp, stride)):
                    cur_b[i] = (cur_b[i] + up[i]) & 0xFF  # left = upleft = 0: predictor is up
                for i in range(bpp, stride):
                    a, b, c = cur_b[i - bpp], up[i], up[i - bpp]
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - c - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    cur_b[i] = (cur_b[i] + pred) & 0xFF
            cur = np.frombuffer(bytes(cur_b), np.uint8)
        out[y] = cur
        prev = out[y]
    return out


def _read_chunks(data):
    """``(type, payload)`` pairs of a PNG byte string, CRCs checked."""
    if not data.startswith(PNG_SIGNATURE):
        raise ImageError("not a PNG file (bad signature)")
    pos, end = len(PNG_SIGNATURE), len(data)
    while pos < end:
        if pos + 8 > end:
            raise ImageError("corrupt PNG: truncated chunk header")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(payload) != length or len(crc) != 4:
            raise ImageError(f"corrupt PNG: truncated {kind.decode('latin-1')} chunk")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + payload) & 0xFFFFFFFF:
            raise ImageError(f"corrupt PNG: CRC mismatch in the {kind.decode('latin-1')} chunk")
        yield kind, payload
        if kind == b"IEND":
            return
        pos += 12 + length
    raise ImageError("corrupt PNG: no IEND chunk (file truncated?)")


def _png_header(data):
    """``(width, height, bit_depth, colour_type, interlace)`` from the IHDR at the file start."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise ImageError("not a PNG file (bad signature or missing IHDR)")
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, ctype, interlace


def decode_png(data):
    """Pixels of a PNG file's contents.

    Parameters
    ----------
    data : bytes

    Returns
    -------
    ndarray of shape (H, W) gray, (H, W, 2) gray + alpha, (H, W, 3) RGB or (H, W, 4) RGBA
        uint8, or uint16 for 16-bit files. Palette images become RGB (RGBA if the palette has
        transparency); gray images of 1, 2 or 4 bits are scaled to 0..255.

    Raises
    ------
    ImageError
        Not a PNG, corrupt, or interlaced (not supported by this decoder).
    """
    header = None
    palette = transparency = None
    idat = []
    for kind, payload in _read_chunks(bytes(data)):
        if kind == b"IHDR":
            if len(payload) != 13:
                raise ImageError("corrupt PNG: IHDR has the wrong length")
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"PLTE":
            if len(payload) % 3 or not payload:
                raise ImageError("corrupt PNG: PLTE length is not a multiple of 3")
            palette = np.frombuffer(payload, np.uint8).reshape(-1, 3)
        elif kind == b"tRNS":
            transparency = np.frombuffer(payload, np.uint8)
        elif kind == b"IDAT":
            idat.append(payload)
    if header is None:
        raise ImageError("corrupt PNG: no IHDR chunk")
    width, height, depth, ctype, compression, filtering, interlace = header
    if ctype not in _COLOR_TYPES or depth not in _COLOR_TYPES[ctype][1]:
        raise ImageError(f"corrupt PNG: invalid colour type {ctype} with bit depth {depth}")
    if compression != 0 or filtering != 0:
        raise ImageError("corrupt PNG: unknown compression or filter method")
    if interlace:
        raise _Unsupported("interlaced PNG files are not supported by the built-in reader "
                           "(install Pillow: pip install fastconv[plots])")
    if width == 0 or height == 0:
        raise ImageError("corrupt PNG: zero width or height")
    if ctype == 3 and palette is None:
        raise ImageError("corrupt PNG: palette image without a PLTE chunk")
    channels = _COLOR_TYPES[ctype][0]
    bits_per_pixel = channels * depth
    stride = (width * bits_per_pixel + 7) // 8
    bpp = max(1, bits_per_pixel // 8)
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise ImageError(f"corrupt PNG: image data does not decompress ({exc})") from None
    if len(raw) < height * (1 + stride):
        raise ImageError(f"corrupt PNG: image data has {len(raw)} bytes, expected "
                         f"{height * (1 + stride)}")
    rows = _unfilter(raw[:height * (1 + stride)], height, stride, bpp)

    if depth == 16:
        pixels = rows.view(">u2").astype(np.uint16).reshape(height, width, channels)
    elif depth == 8:
        pixels = rows.reshape(height, width, channels)
    else:  # 1, 2 or 4 bits per sample, one channel (gray or palette index)
        bits = np.unpackbits(rows, axis=1).reshape(height, -1, depth)[:, :width]
        weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
        pixels = (bits * weights).sum(axis=2, dtype=np.uint8)[:, :, None]
        if ctype == 0:
            pixels = pixels * np.uint8(255 // ((1 << depth) - 1))
    if ctype == 3:
        index = pixels[:, :, 0]
        if index.max() >= len(palette):
            raise ImageError("corrupt PNG: palette index out of range")
        if transparency is not None and transparency.size:
            alpha = np.full(len(palette), 255, np.uint8)
            alpha[:min(len(alpha), transparency.size)] = transparency[:len(alpha)]
            return np.concatenate([palette, alpha[:, None]], axis=1)[index]
        return palette[index]
    return pixels[:, :, 0] if channels == 1 else pixels


def read_png(path):
    """:func:`decode_png` of the file at ``path``."""
    return decode_png(_read_bytes(path))


# --------------------------------------------------------------------------------------------
# Loading images for the command line and the examples


def _read_bytes(path):
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise ImageError(f"no such file: {os.fspath(path)!r}") from None
    except IsADirectoryError:
        raise ImageError(f"{os.fspath(path)!r} is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from None


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _read_with_pillow(path, what):
    image_module = _pillow()
    if image_module is None:
        raise ImageError(f"reading {what} needs Pillow: pip install fastconv[plots] "
                         f"({os.fspath(path)!r})")
    try:
        with image_module.open(path) as image:
            image.load()
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.asarray(image)
    except Exception as exc:  # noqa: BLE001  (Pillow raises many types for bad files)
        raise ImageError(f"cannot read {os.fspath(path)!r} as an image: {exc}") from None


def read_image(path):
    """Pixels of a PNG or JPEG file, as :func:`decode_png` returns them.

    PNG files are decoded by the built-in decoder (large or interlaced ones by Pillow when it is
    installed); JPEG and other formats need Pillow.

    Raises
    ------
    ImageError
        Missing or unreadable file, unknown format, or a format that needs Pillow without it.
    """
    data = _read_bytes(path)
    if data.startswith(PNG_SIGNATURE):
        width, height, *_ = _png_header(data)
        if width * height > _LARGE_IMAGE_PIXELS and _pillow() is not None:
            return _read_with_pillow(path, "a PNG file")
        try:
            return decode_png(data)
        except _Unsupported:
            if _pillow() is None:
                raise
            return _read_with_pillow(path, "a PNG file")
    if data.startswith(JPEG_SIGNATURE):
        return _read_with_pillow(path, "JPEG files")
    if not data:
        raise ImageError(f"{os.fspath(path)!r} is empty, not an image")
    if _pillow() is None:
        raise ImageError(f"{os.fspath(path)!r} is not a PNG or JPEG file")
    try:
        return _read_with_pillow(path, "this image format")
    except ImageError:
        raise ImageError(f"{os.fspath(path)!r} is not a PNG or JPEG file (nor another format "
                         "Pillow reads)") from None


def _as_unit_float(pixels):
    """float32 in [0, 1] from uint8/uint16 (or float already in [0, 1]) pixels."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535)
    if pixels.dtype == bool:
        return pixels.astype(np.float32)
    return pixels.astype(np.float32)


def to_rgb(pixels):
    """(H, W, 3) float32 in [0, 1] from gray, gray + alpha, RGB or RGBA pixels.

    Transparent pixels are composited onto white.
    """
    image = _as_unit_float(np.asarray(pixels))
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"an image must have shape (H, W) or (H, W, 1|2|3|4), got {image.shape}")
    if image.shape[2] in (2, 4):
        alpha = image[:, :, -1:]
        image = image[:, :, :-1] * alpha + (1 - alpha)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image, np.float32)


def to_gray(pixels):
    """(H, W) float32 luminance in [0, 1] (ITU-R BT.601 weights) from any image :func:`to_rgb`
    accepts."""
    image = np.asarray(pixels)
    if image.ndim == 2:
        return _as_unit_float(image)
    rgb = to_rgb(image)
    return np.ascontiguousarray(rgb @ np.array([0.299, 0.587, 0.114], np.float32), np.float32)


def downscale(image, max_size):
    """Shrink by an integer factor (mean of each block) until both sides are <= ``max_size``.

    ``image`` is (H, W) or (H, W, C); trailing rows/columns that do not fill a block are cropped.
    Returns the image unchanged when it already fits or ``max_size`` is None or 0.
    """
    if not max_size:
        return image
    height, width = image.shape[:2]
    factor = -(-max(height, width) // max_size)
    if factor <= 1:
        return image
    h, w = height // factor, width // factor
    blocks = image[:h * factor, :w * factor].reshape((h, factor, w, factor) + image.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(image.dtype)


def load_image(path, *, mode="gray", max_size=None):
    """Read a PNG or JPEG file as float32 in [0, 1].

    Parameters
    ----------
    path : str or os.PathLike
    mode : {"gray", "rgb"}, default "gray"
        "gray" returns shape (H, W) (luminance), "rgb" returns (H, W, 3).
    max_size : int, optional
        Shrink by an integer factor so both sides are at most this (see :func:`downscale`).

    Returns
    -------
    ndarray of float32

    Raises
    ------
    ImageError
        With a one-line message naming the file.

    Examples
    --------
    >>> from fastconv._images import SAMPLE_IMAGE_PATH, load_image
    >>> load_image(SAMPLE_IMAGE_PATH).shape
    (128, 128)
    """
    if mode not in ("gray", "rgb"):
        raise ValueError(f"mode must be 'gray' or 'rgb', got {mode!r}")
    pixels = read_image(path)
    image = to_gray(pixels) if mode == "gray" else to_rgb(pixels)
    return downscale(image, max_size)


def sample_image():
    """The bundled 128x128 sample scene as (128, 128) float32 in [0, 1].

    A synthetic picture made by :func:`make_sample_image` and shipped as
    ``fastconv/data/sample.png``: straight edges at 0, 45, 90 and ~60 degrees, circles, letters,
    a wavy stroke and two textures (a tilted grating and speckle).
    """
    try:
        return to_gray(read_png(SAMPLE_IMAGE_PATH))
    except ImageError:  # the file is missing from a broken install: draw it again
        return make_sample_image().astype(np.float32) / np.float32(255)


# --------------------------------------------------------------------------------------------
# The sample scene


def make_sample_image(size=128, supersample=4, seed=5):
    """Draw the synthetic sample scene as a (size, size) uint8 gray image.

    Shapes are rendered on a grid ``supersample`` times finer and averaged, so edges are
    anti-aliased; the speckle texture comes from ``numpy.random.default_rng(seed)``. The same
    arguments give the same pixels on every machine.

    ``python examples/make_sample_image.py`` writes it to ``fastconv/data/sample.png``.
    """
    n = size * supersample
    # pixel-centre coordinates of the fine grid, in units of a 128-pixel scene
    coords = (np.arange(n) + 0.5) / supersample * (128.0 / size)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    scene = 0.42 + 0.16 * (x + y) / 256.0  # soft diagonal light

    def paint(mask, value):
        np.copyto(scene, value, where=mask)

    # Rectangle: horizontal and vertical edges.
    paint((x >= 8) & (x < 50) & (y >= 8) & (y < 38), 0.92)
    # Diamond: edges at +-45 degrees.
    paint(np.abs(x - 93) + np.abs(y - 24) < 17, 0.06)
    # Target: a bright ring around a dark disc.
    r = np.hypot(x - 95, y - 66)
    paint((r < 17) & (r >= 11), 0.95)
    paint(r < 6, 0.05)
    # Letters "CNN" in the block font, 3x scaled: text-like strokes.
    letters = np.zeros((GLYPH_HEIGHT, text_width("CNN")), bool)
    _stamp(letters, 0, 0, "CNN")
    cell = np.floor(np.stack([(y - 48) / 3, (x - 9) / 3])).astype(int)
    inside = ((cell[0] >= 0) & (cell[0] < letters.shape[0])
              & (cell[1] >= 0) & (cell[1] < letters.shape[1]))
    hit = np.zeros_like(inside)
    hit[inside] = letters[cell[0][inside], cell[1][inside]]
    paint(hit, 0.04)
    # A wavy underline: a curved stroke.
    paint((x >= 8) & (x < 62) & (np.abs(y - (75 + 2.5 * np.sin(x / 4.0))) < 1.1), 0.04)
    # A tilted grating (texture with one orientation), period 6 px at 30 degrees.
    phase = (x * np.cos(np.pi / 6) + y * np.sin(np.pi / 6)) * (2 * np.pi / 6)
    grating = (x >= 8) & (x < 56) & (y >= 84) & (y < 120)
    np.copyto(scene, 0.5 + 0.4 * np.sin(phase), where=grating)
    # A triangle filled with speckle: edges at about +-60 degrees and an orientation-free texture.
    tri = (y < 123) & (y - 87 > 1.75 * np.abs(x - 96)) & (x >= 70) & (x < 122)
    rng = np.random.default_rng(seed)
    speckle = rng.random((size // 2, size // 2))  # 2x2-pixel grains
    grains = np.kron(speckle, np.ones((2 * supersample, 2 * supersample)))[:n, :n]
    np.copyto(scene, 0.55 + 0.4 * (grains - 0.5), where=tri)

    pixels = scene.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# A tiny bitmap font (5x7, upper case) for labels in the built-in PNG renderer


GLYPH_WIDTH, GLYPH_HEIGHT = 5, 7

# Each glyph: 7 rows of 5 pixels, "#" on. Lower case is drawn as upper case.
_GLYPHS = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    " ": "..... ..... ..... ..... ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    ";": "..... .##.. .##.. ..... .##.. ..#.. .#...",
    "-": "..... ..... ..... .###. ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "\u00b1": "..#.. ..#.. ##### ..#.. ..#.. ..... #####",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "=": "..... ..... ##### ..... ##### ..... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "[": ".###. .#... .#... .#... .#... .#... .###.",
    "]": ".###. ...#. ...#. ...#. ...#. ...#. .###.",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "\\": "..... #.... .#... ..#.. ...#. ....# .....",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "*": "..... ..#.. #.#.# .###. #.#.# ..#.. .....",
    "<": "...#. ..#.. .#... #.... .#... ..#.. ...#.",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
    "'": "..#.. ..#.. .#... ..... ..... ..... .....",
    '"': ".#.#. .#.#. ..... ..... ..... ..... .....",
    "!": "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "|": "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "\u00d7": "..... #...# .#.#. ..#.. .#.#. #...# .....",
}
_GLYPH_BITS = {char: np.array([[c == "#" for c in row] for row in rows.split()], bool)
               for char, rows in _GLYPHS.items()}


def text_width(text, scale=1):
    """Width in pixels of ``text`` drawn by :func:`draw_text` (one blank column between
    characters)."""
    return max(0, len(text) * (GLYPH_WIDTH + 1) - 1) * scale


def _stamp(mask, top, left, text):
    """Set the pixels of ``text`` (scale 1) in the boolean ``mask``, clipped to its bounds."""
    for i, char in enumerate(text):
        glyph = _GLYPH_BITS.get(char.upper(), _GLYPH_BITS["?"])
        x0 = left + i * (GLYPH_WIDTH + 1)
        y0 = top
        ys, xs = slice(max(y0, 0), min(y0 + GLYPH_HEIGHT, mask.shape[0])), \
            slice(max(x0, 0), min(x0 + GLYPH_WIDTH, mask.shape[1]))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        mask[ys, xs] |= glyph[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]


def draw_text(canvas, top, left, text, color, scale=1):
    """Draw ``text`` into ``canvas`` ((H, W) or (H, W, C) uint8) in the 5x7 block font.

    Characters without a glyph are drawn as "?"; lower case is drawn as upper case; text
    running off the canvas is clipped. Returns the x coordinate just right of the text.
    """
    if not text:
        return left
    mask = np.zeros((GLYPH_HEIGHT, text_width(text)), bool)
    _stamp(mask, 0, 0, text)
    if scale > 1:
        mask = np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)
    height, width = canvas.shape[:2]
    ys = slice(max(top, 0), min(top + mask.shape[0], height))
    xs = slice(max(left, 0), min(left + mask.shape[1], width))
    if ys.start < ys.stop and xs.start < xs.stop:
        region = canvas[ys, xs]
        region[mask[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left]] = color
    return left + mask.shape[1]
