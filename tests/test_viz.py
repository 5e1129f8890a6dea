"""fastconv.viz (matplotlib with the Agg backend, and the NumPy grid renderer) and the image
helpers of fastconv._images (PNG encoder/decoder, loading, the sample image, the bitmap font)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from fastconv import _images, viz
from fastconv._images import ImageError, decode_png, encode_png

try:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
except ImportError:
    matplotlib = None

try:
    from PIL import Image
except ImportError:
    Image = None

needs_matplotlib = pytest.mark.skipif(matplotlib is None, reason="matplotlib is not installed")
needs_pillow = pytest.mark.skipif(Image is None, reason="Pillow is not installed")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def layer_maps(rng):
    """A small Sequential.feature_maps output: signed conv maps, ReLU, pooled."""
    from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential

    net = Sequential({"conv": Conv2D.from_shape(1, 6, 3, padding=1, seed=0), "relu": ReLU(),
                      "pool": MaxPool2D(2)})
    return net.feature_maps(rng.random((1, 20, 24), np.float32))


# --------------------------------------------------------------------------------------------
# PNG encoder / decoder


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 33), (3, 4, 1), (9, 6, 2), (7, 5, 3),
                                   (8, 11, 4), (64, 64, 3)])
def test_png_round_trip(rng, shape):
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    if image.size > 100:  # smooth parts too, so every row filter gets chosen somewhere
        image[: shape[0] // 2] = np.arange(shape[1], dtype=np.uint8)[None, :, None] \
            if image.ndim == 3 else np.arange(shape[1], dtype=np.uint8)[None]
    data = encode_png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = decode_png(data)
    expected = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, expected)


def test_png_encoder_uses_all_filters_and_compresses(rng):
    y, x = np.mgrid[0:64, 0:64]
    image = np.stack([x * 4, y * 4, (x + y) * 2], axis=2).astype(np.uint8)
    image[40:] = rng.integers(0, 256, (24, 64, 3), dtype=np.uint8)
    data = encode_png(image)
    raw = zlib.decompress(data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8])
    filters = {raw[row * (1 + 64 * 3)] for row in range(64)}
    assert len(filters) >= 2 and filters <= {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(decode_png(data), image)
    gradient = encode_png(image[:40])
    assert len(gradient) < 40 * 64 * 3 / 10  # smooth gradients compress well with filtering


def test_png_bool_and_errors(tmp_path):
    decoded = decode_png(encode_png(np.eye(3, dtype=bool)))
    np.testing.assert_array_equal(decoded, np.eye(3, dtype=np.uint8) * 255)
    with pytest.raises(ImageError, match="uint8"):
        encode_png(np.zeros((2, 2)))
    with pytest.raises(ImageError, match="shape"):
        encode_png(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ImageError, match="rows and columns"):
        encode_png(np.zeros((0, 2), np.uint8))
    with pytest.raises(ImageError, match="cannot write"):
        _images.write_png(tmp_path / "missing" / "x.png", np.zeros((2, 2), np.uint8))


def test_png_decoder_rejects_corrupt_files():
    data = encode_png(np.arange(64, dtype=np.uint8).reshape(8, 8))
    with pytest.raises(ImageError, match="not a PNG"):
        decode_png(b"GIF89a" + data[6:])
    with pytest.raises(ImageError, match="corrupt PNG"):
        decode_png(data[:-15])  # truncated
    flipped = bytearray(data)
    flipped[data.index(b"IDAT") + 6] ^= 0xFF
    with pytest.raises(ImageError, match="CRC mismatch in the IDAT"):
        decode_png(bytes(flipped))
    with pytest.raises(ImageError, match="no IEND"):
        decode_png(data[:data.index(b"IEND") - 4])


def _png_from_rows(width, height, depth, ctype, rows, extra=(), interlace=0):
    """A PNG built by hand: ``rows`` are the filtered scanlines (filter byte included)."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + b"".join(chunk(kind, payload) for kind, payload in extra)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def test_png_decoder_low_bit_depths_palette_and_16_bit():
    # 1-bit gray: 10 pixels wide = 2 bytes per row
    data = _png_from_rows(10, 2, 1, 0, [b"\x00\xa5\xc0", b"\x00\xff\x00"])
    np.testing.assert_array_equal(decode_png(data), [[255, 0, 255, 0, 0, 255, 0, 255, 255, 255],
                                                     [255] * 8 + [0, 0]])
    # 4-bit gray scaled to 0..255 (value * 17)
    data = _png_from_rows(3, 1, 4, 0, [b"\x00\x0f\x80"])
    np.testing.assert_array_equal(decode_png(data), [[0, 255, 136]])
    # 2-bit palette with transparency for the first entry
    palette = bytes([10, 20, 30, 200, 100, 0, 0, 0, 255])
    data = _png_from_rows(4, 1, 2, 3, [b"\x00\x24"],  # indices 0, 2, 1, 0
                          extra=[(b"PLTE", palette), (b"tRNS", b"\x00")])
    np.testing.assert_array_equal(decode_png(data), [[[10, 20, 30, 0], [0, 0, 255, 255],
                                                      [200, 100, 0, 255], [10, 20, 30, 0]]])
    # 16-bit RGB, big-endian
    data = _png_from_rows(1, 1, 16, 2, [b"\x00\x01\x02\xff\xff\x00\x10"])
    decoded = decode_png(data)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, [[[0x0102, 0xFFFF, 0x0010]]])
    # interlaced: a clear "not supported" message
    with pytest.raises(ImageError, match="interlaced"):
        decode_png(_png_from_rows(1, 1, 8, 0, [b"\x00\x00"], interlace=1))
    # a palette image without a palette, a bad filter byte
    with pytest.raises(ImageError, match="PLTE"):
        decode_png(_png_from_rows(1, 1, 8, 3, [b"\x00\x00"]))
    with pytest.raises(ImageError, match="row filter 7"):
        decode_png(_png_from_rows(1, 1, 8, 0, [b"\x07\x00"]))


def test_png_decoder_average_and_paeth_rows():
    """Rows filtered by hand with filter 3 (average) and 4 (Paeth), 2 bytes per pixel."""
    raw = np.array([[10, 200, 30, 40, 250, 60], [70, 80, 90, 100, 110, 120],
                    [5, 250, 15, 20, 25, 30]], np.int32)  # 3 rows, 3 gray+alpha pixels
    bpp = 2

    def average(row, up):
        out = []
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            out.append((value - (left + up[i]) // 2) % 256)
        return out

    def paeth(row, up):
        out = []
        for i, value in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = up[i]
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out.append((value - pred) % 256)
        return out

    zero = [0] * 6
    rows = [bytes([4] + paeth(raw[0], zero)), bytes([3] + average(raw[1], raw[0])),
            bytes([4] + paeth(raw[2], raw[1]))]
    decoded = decode_png(_png_from_rows(3, 3, 8, 4, rows))
    np.testing.assert_array_equal(decoded, raw.reshape(3, 3, 2))


@needs_pillow
@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "1", "I;16"])
def test_png_decoder_reads_what_pillow_writes(tmp_path, rng, mode):
    pixels = rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)
    pixels[:10] = np.linspace(0, 255, 37).astype(np.uint8)[None, :, None]  # smooth rows
    image = Image.fromarray(pixels, "RGB")
    if mode == "P":
        image = image.quantize(colors=16)
    elif mode == "I;16":
        image = Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    path = tmp_path / f"pillow_{mode.replace(';', '')}.png"
    image.save(path, optimize=False)
    ours = _images.read_png(path)
    with Image.open(path) as reference:
        if mode == "P":
            expected = np.asarray(reference.convert("RGB"))
        elif mode == "1":
            expected = np.asarray(reference.convert("L"))
        else:
            expected = np.asarray(reference)
    np.testing.assert_array_equal(ours, expected)


@needs_pillow
def test_read_image_uses_pillow_for_jpeg_and_interlaced_png(tmp_path, rng):
    pixels = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    assert _images.read_image(tmp_path / "a.jpg").shape == (16, 20, 3)
    Image.fromarray(pixels).save(tmp_path / "i.png", interlace=1)
    np.testing.assert_array_equal(_images.read_image(tmp_path / "i.png"), pixels)


def test_load_image_modes_and_downscale(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[..., 3] = 255
    rgba[:, 4:, 3] = 0  # right half transparent: composited onto white
    _images.write_png(tmp_path / "a.png", rgba)
    gray = _images.load_image(tmp_path / "a.png")
    assert gray.shape == (6, 8) and gray.dtype == np.float32
    np.testing.assert_allclose(gray[:, :4], 0.299, atol=1e-6)
    np.testing.assert_allclose(gray[:, 4:], 1.0, atol=1e-6)
    rgb = _images.load_image(tmp_path / "a.png", mode="rgb")
    assert rgb.shape == (6, 8, 3)
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0])
    small = _images.load_image(tmp_path / "a.png", max_size=4)
    assert small.shape == (3, 4)
    np.testing.assert_allclose(small, gray.reshape(3, 2, 4, 2).mean(axis=(1, 3)), atol=1e-6)
    assert _images.downscale(gray, 8) is gray and _images.downscale(gray, 0) is gray
    assert _images.downscale(np.zeros((10, 7)), 3).shape == (2, 1)
    with pytest.raises(ValueError, match="mode"):
        _images.load_image(tmp_path / "a.png", mode="cmyk")
    with pytest.raises(ImageError, match="no such file"):
        _images.load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        _images.read_image(tmp_path / "empty.png")


def test_sample_image_is_bundled_and_reproducible():
    assert _images.SAMPLE_IMAGE_PATH.is_file()
    assert _images.SAMPLE_IMAGE_PATH.stat().st_size < 100_000
    stored = _images.read_png(_images.SAMPLE_IMAGE_PATH)
    assert stored.shape == (128, 128) and stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, _images.make_sample_image())
    image = _images.sample_image()
    assert image.dtype == np.float32 and image.shape == (128, 128)
    # a scene, not noise: large flat areas, many distinct levels, strong edges
    assert len(np.unique(stored)) > 50
    assert np.mean(np.abs(np.diff(image, axis=1)) < 0.01) > 0.6
    assert np.abs(np.diff(image, axis=0)).max() > 0.4


def test_bitmap_font():
    canvas = np.zeros((9, 40), np.uint8)
    end = _images.draw_text(canvas, 1, 1, "Hi 0:", 255)
    assert end == 1 + _images.text_width("Hi 0:") == 30
    assert canvas[1:8, 1:6].astype(bool).tolist() == [[c == "#" for c in row] for row in
                                                      _images._GLYPHS["H"].split()]
    assert canvas[0].max() == 0 and canvas[8].max() == 0  # nothing outside the glyph rows
    assert not (canvas[:, 30:] > 0).any()
    big = np.zeros((20, 20, 3), np.uint8)
    _images.draw_text(big, -3, 15, "\u2603W", (1, 2, 3), scale=2)  # clipped, unknown -> "?"
    assert (big[..., 0] > 0).any() and big[..., 2].max() == 3
    assert _images.text_width("") == 0 and _images.draw_text(canvas, 0, 5, "", 1) == 5


# --------------------------------------------------------------------------------------------
# the NumPy grid renderer


def test_feature_map_grid_of_layers(rng):
    maps = layer_maps(rng)
    names = [f"f{i}" for i in range(6)]
    grid = viz.feature_map_grid(maps, titles={"0:conv": names}, title="demo", footer=False)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    # the signed conv maps use orange and blue; ReLU and pooled maps are gray
    r, b = grid[..., 0].astype(int), grid[..., 2].astype(int)
    assert ((r - b) > 100).any() and ((b - r) > 100).any()
    gray_grid = viz.feature_map_grid({"relu": maps["1:relu"]}, footer=False)
    assert (gray_grid[..., 0] == gray_grid[..., 2]).all()
    # three sections: taller than one
    assert grid.shape[0] > 1.6 * gray_grid.shape[0]
    assert grid.shape[1] == 2 * 10 + 6 * 50 + 5 * 6  # layers: all six maps in one row
    assert gray_grid.shape[1] == 2 * 10 + 3 * 50 + 2 * 6  # one section: a 2 x 3 grid


def test_feature_map_grid_colours_are_per_map():
    maps = np.stack([np.full((4, 4), 0.0), np.full((4, 4), 0.0)])
    maps[0, 0, 0], maps[1, 0, 0] = 1.0, 1000.0  # very different scales, same picture
    maps[0, 3, 3] = maps[1, 3, 3] = np.nan
    grid = viz.feature_map_grid(maps, cell_size=48, footer=False)
    cells = []
    for label_col in (10, 10 + 50 + 6):
        cell = grid[10 + 20 + 1:10 + 20 + 49, label_col + 1:label_col + 49]
        cells.append(cell)
    np.testing.assert_array_equal(cells[0], cells[1])
    assert (cells[0][0, 0] == 255).all()  # the maximum is white
    assert (cells[0][-1, -1] == [255, 0, 255]).all()  # NaN is magenta
    assert (cells[0][0, -1] == 0).all()  # the minimum is black


@pytest.mark.parametrize("count", [1, 2, 5, 16, 64, 256])
def test_feature_map_grid_layouts(rng, count):
    grid = viz.feature_map_grid(rng.standard_normal((count, 6, 6)), cell_size=24, footer=False)
    rows, cols = viz.grid_shape(count)
    assert rows * cols >= count > (rows - 1) * cols
    assert cols <= 4 * rows  # never a long strip
    # margins 10, cells 24 + a 1-pixel frame on each side, gaps of 6
    assert grid.shape[1] == 2 * 10 + cols * 26 + (cols - 1) * 6
    assert grid.shape[0] == 2 * 10 + rows * (2 * 10 + 26) + (rows - 1) * 6 + 10


def test_feature_map_grid_inputs(rng):
    batch = rng.standard_normal((3, 4, 10, 10))
    np.testing.assert_array_equal(viz.feature_map_grid(batch, index=2),
                                  viz.feature_map_grid(batch[2]))
    nhwc = np.moveaxis(batch, 1, -1)
    np.testing.assert_array_equal(viz.feature_map_grid(nhwc, layout="NHWC"),
                                  viz.feature_map_grid(batch[0]))
    assert viz.feature_map_grid(batch[0, 0]).ndim == 3  # a single (H, W) map
    limited = viz.feature_map_grid({"a": batch[0]}, max_maps=2)
    full = viz.feature_map_grid({"a": batch[0]}, ncols=2)
    assert limited.shape[0] < full.shape[0]
    with pytest.raises(ValueError, match="3 titles for 4 maps"):
        viz.feature_map_grid(batch[0], titles=["a", "b", "c"])
    with pytest.raises(TypeError, match="dict mapping layer names"):
        viz.feature_map_grid({"a": batch[0]}, titles=["a"] * 4)
    with pytest.raises(ValueError, match="must have shape"):
        viz.feature_map_grid(np.zeros(5))
    with pytest.raises(IndexError, match="batch size 3"):
        viz.feature_map_grid(batch, index=3)
    with pytest.raises(ValueError, match="max_maps"):
        viz.feature_map_grid(batch[0], max_maps=0)
    with pytest.raises(TypeError, match="numeric"):
        viz.feature_map_grid(np.array([["a"]]))
    with pytest.raises(ValueError, match="empty"):
        viz.feature_map_grid({})


def test_save_feature_maps_builtin(tmp_path, rng):
    path = tmp_path / "maps.png"
    assert viz.save_feature_maps(layer_maps(rng), path, renderer="builtin") == "builtin"
    assert decode_png(path.read_bytes()).shape[2] == 3
    with pytest.raises(ValueError, match="renderer"):
        viz.save_feature_maps(layer_maps(rng), path, renderer="svg")


# --------------------------------------------------------------------------------------------
# matplotlib (Agg)


@needs_matplotlib
def test_plot_feature_maps_dict_one_section_per_layer(rng):
    maps = layer_maps(rng)
    names = [f"filter {i}" for i in range(6)]
    fig = viz.plot_feature_maps(maps, titles={"0:conv": names}, suptitle="layers")
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        axes = fig.get_axes()
        assert len(axes) == 18  # 3 layers x 6 maps
        titles = [ax.get_title() for ax in axes]
        assert titles[0].startswith("filter 0\n\u00b1")  # signed conv map: symmetric range
        assert titles[6].startswith("#0\n0..")  # ReLU map: 0..max
        texts = [t.get_text() for t in fig.texts]
        assert any(t.startswith("0:conv  (6, 20, 24)") for t in texts)
        assert any(t.startswith("2:pool  (6, 10, 12)") for t in texts)
        image = axes[0].get_images()[0]
        low, high = image.get_clim()
        assert low == -high and high == pytest.approx(np.abs(maps["0:conv"][0]).max())
        relu_low, relu_high = axes[6].get_images()[0].get_clim()
        assert relu_low == pytest.approx(maps["1:relu"][0].min())
        assert relu_high == pytest.approx(maps["1:relu"][0].max())
        fig.canvas.draw()  # renders with Agg without error
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


@needs_matplotlib
@pytest.mark.parametrize("count, cols", [(1, 1), (3, 3), (7, 4), (64, 8), (256, 20)])
def test_plot_feature_maps_layouts(rng, count, cols):
    fig = viz.plot_feature_maps(rng.standard_normal((count, 5, 5)), show_range=False,
                                fig=Figure())
    visible = [ax for ax in fig.get_axes() if ax.get_images()]
    assert len(visible) == count
    lefts = sorted({round(ax.get_position().x0, 4) for ax in visible})
    assert len(lefts) == cols
    width, height = fig.get_size_inches()
    assert width <= 14 and height <= 14


@needs_matplotlib
def test_plot_feature_maps_options(rng, tmp_path):
    maps = rng.standard_normal((2, 8, 6, 6))
    fig = viz.plot_feature_maps(maps, index=1, max_maps=3, ncols=2, diverging=False,
                                cmap="viridis", fig=Figure())
    axes = [ax for ax in fig.get_axes() if ax.get_images()]
    assert len(axes) == 3
    image = axes[0].get_images()[0]
    assert image.get_cmap().name.startswith("viridis")
    assert image.get_clim() == pytest.approx((maps[1, 0].min(), maps[1, 0].max()))
    fig = viz.plot_feature_maps(maps[0], diverging="RdBu_r", fig=Figure())
    assert fig.get_axes()[0].get_images()[0].get_cmap().name.startswith("RdBu_r")
    fig.savefig(tmp_path / "x.png")
    assert decode_png((tmp_path / "x.png").read_bytes()).ndim == 3


@needs_matplotlib
def test_plot_filters(tmp_path):
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    fig = viz.plot_filters(np.stack([sobel, sobel.T])[:, None], titles=["sobel-x", "sobel-y"],
                           fig=Figure())
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["sobel-x", "sobel-y"]
    assert axes[0].get_images()[0].get_clim() == (-2, 2)
    assert [t.get_text() for t in axes[0].texts][:3] == ["-1", "0", "1"]  # annotated
    rgb = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    fig = viz.plot_filters(rgb, fig=Figure())
    axes = fig.get_axes()
    assert len(axes) == 12 and axes[0].get_title() == "filter 0, in 0"
    assert axes[1].get_title() == "in 1"
    fig = viz.plot_filters(np.zeros((100, 1, 7, 7)), max_filters=10, fig=Figure())
    assert len([ax for ax in fig.get_axes() if ax.get_images()]) == 10
    assert "first 10 of 100" in fig._suptitle.get_text()
    assert not fig.get_axes()[0].texts  # 7x7: not annotated by default
    fig.savefig(tmp_path / "filters.png")
    with pytest.raises(ValueError, match="KH, KW"):
        viz.plot_filters(np.zeros(3))


@needs_matplotlib
def test_save_feature_maps_auto_uses_matplotlib(tmp_path, rng):
    path = tmp_path / "maps.png"
    assert viz.save_feature_maps(layer_maps(rng), path, title="t") == "matplotlib"
    pixels = decode_png(path.read_bytes())
    assert pixels.ndim == 3 and pixels.shape[0] > 300


def test_viz_without_matplotlib_names_the_extra(monkeypatch, rng):
    import builtins

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("blocked")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(ImportError, match=r"pip install fastconv\[plots\]"):
        viz.plot_feature_maps(np.zeros((2, 3, 3)))
    with pytest.raises(ImportError, match=r"fastconv\[plots\]"):
        viz.plot_filters(np.zeros((2, 1, 3, 3)))
    assert not viz._have_matplotlib()
    with pytest.raises(ImportError, match=r"fastconv\[plots\]"):
        viz.save_feature_maps(np.zeros((2, 3, 3)), "never.png", renderer="matplotlib")
