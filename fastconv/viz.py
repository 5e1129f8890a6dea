"""Pictures of feature maps and filters.

Two ways to draw the same grid, with the same colour rules:

- :func:`plot_feature_maps` and :func:`plot_filters` return matplotlib Figures (needs the
  ``plots`` extra: ``pip install fastconv[plots]``; matplotlib is imported only when called);
- :func:`feature_map_grid` renders the grid as an RGB array with NumPy alone (labels in a
  built-in 5x7 font), and :func:`save_feature_maps` writes a PNG with matplotlib when it is
  installed and with the built-in PNG writer otherwise.

Colour rules, per map (each map has its own scale, so weak and strong filters are both
visible): a map with both signs (a convolution before ReLU) is drawn with a black-centred
diverging scale, negative blue, positive orange, symmetric around 0 up to the map's largest
``|value|``; a map of one sign (after ReLU or pooling, or an image) is drawn in gray from its
minimum (black) to its maximum (white). NaN is magenta.

Every function takes what :meth:`fastconv.layers.Sequential.feature_maps` returns (a dict, one
section per layer) or a single array of shape (C, H, W), (N, C, H, W) or (H, W)::

    >>> import numpy as np
    >>> from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential
    >>> from fastconv import viz
    >>> net = Sequential([Conv2D.from_shape(1, 4, 3, seed=0), ReLU(), MaxPool2D(2)])
    >>> maps = net.feature_maps(np.random.default_rng(0).random((1, 32, 32), np.float32))
    >>> viz.feature_map_grid(maps).shape[2]      # an RGB image, NumPy only
    3
    >>> fig = viz.plot_feature_maps(maps)         # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from . import _images

__all__ = [
    "feature_map_grid",
    "grid_shape",
    "plot_feature_maps",
    "plot_filters",
    "save_feature_maps",
]

# The diverging scale: -max -> NEGATIVE, 0 -> black, +max -> POSITIVE (linear in between).
NEGATIVE = (0.25, 0.62, 1.0)
POSITIVE = (1.0, 0.62, 0.12)
NAN_COLOR = (1.0, 0.0, 1.0)

_PLOTS_HINT = "pip install fastconv[plots]"


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"fastconv.viz plotting needs matplotlib: {_PLOTS_HINT} "
                          "(feature_map_grid and save_feature_maps work without it)") from None
    return matplotlib


def _have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Sections and layout (shared by the two renderers)


class _Section(NamedTuple):
    heading: str  # "" for a single array
    planes: np.ndarray  # (k, H, W) float64, the maps shown
    labels: list  # k titles
    total: int  # maps in the layer (k <= total when max_maps cut it)


def _planes(array, index, layout, what):
    """(C, H, W) float64 planes of one image out of an array of 2, 3 or 4 dimensions."""
    a = np.asarray(array)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be a numeric array, got dtype {a.dtype}")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if a.ndim == 4:
        if not -a.shape[0] <= index < a.shape[0]:
            raise IndexError(f"index {index} is out of range for {what} with batch size "
                             f"{a.shape[0]}")
        a = a[index]
    if a.ndim == 2:
        a = a[None] if layout == "NCHW" else a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"{what} must have shape (H, W), (C, H, W) or (N, C, H, W) "
                         f"(NHWC with layout='NHWC'), got {np.shape(array)}")
    if layout == "NHWC":
        a = np.moveaxis(a, -1, 0)
    if 0 in a.shape:
        raise ValueError(f"{what} is empty: shape {np.shape(array)}")
    return a.astype(np.float64, copy=False)


def _labels(given, count, default, what):
    if given is None:
        return [default(i) for i in range(count)]
    if isinstance(given, str) or not hasattr(given, "__iter__"):
        raise TypeError(f"{what} must be a sequence of strings, got {type(given).__name__}")
    given = [str(t) for t in given]
    if len(given) != count:
        raise ValueError(f"{what} has {len(given)} titles for {count} maps")
    return given


def _sections(maps, titles, max_maps, index, layout):
    """Normalise the inputs of the plotting functions to a list of :class:`_Section`."""
    if max_maps is not None and (isinstance(max_maps, bool) or int(max_maps) != max_maps
                                 or max_maps < 1):
        raise ValueError(f"max_maps must be None or an int >= 1, got {max_maps!r}")
    if isinstance(maps, Mapping):
        if not maps:
            raise ValueError("maps is an empty dict")
        if titles is not None and not isinstance(titles, Mapping):
            raise TypeError("with a dict of maps, titles must be a dict mapping layer names to "
                            "lists of titles (or None)")
        items = list(maps.items())
    else:
        if isinstance(titles, Mapping):
            raise TypeError("titles must be a list of strings for an array of maps")
        items = [("", maps)]
        titles = {"": titles}
    titles = titles or {}
    sections = []
    for key, array in items:
        what = f"maps[{key!r}]" if key else "maps"
        planes = _planes(array, index, layout, what)
        count = planes.shape[0]
        labels = _labels(titles.get(key), count, lambda i: f"#{i}", f"titles[{key!r}]"
                         if key else "titles")
        shown = count if max_maps is None else min(count, int(max_maps))
        heading = f"{key}  {tuple(planes.shape)}" if key else ""
        sections.append(_Section(heading, planes[:shown], labels[:shown], count))
    return sections


def grid_shape(count, aspect=1.0, max_cols=None):
    """``(rows, cols)`` for ``count`` maps of width/height ``aspect``: up to 4 in one row,
    otherwise a grid close to 4:3 landscape that wastes few cells.

    Examples
    --------
    >>> [grid_shape(n) for n in (1, 3, 6, 8, 16, 64, 256)]
    [(1, 1), (1, 3), (2, 3), (2, 4), (4, 4), (8, 8), (13, 20)]
    """
    count = max(1, int(count))
    if count <= 4 and (max_cols is None or count <= max_cols):
        return 1, count
    best = None
    for cols in range(1, (max_cols or count) + 1):
        rows = -(-count // cols)
        if rows * cols - count >= cols:  # a whole empty row
            continue
        waste = (rows * cols - count) / count
        shape_penalty = abs(math.log(cols * aspect / rows / 1.33))
        score = shape_penalty + 6 * waste
        if best is None or score < best[0] - 1e-9:
            best = (score, rows, cols)
    return best[1], best[2]


def _section_cols(sections, ncols):
    if ncols is not None:
        if isinstance(ncols, bool) or int(ncols) != ncols or ncols < 1:
            raise ValueError(f"ncols must be None or an int >= 1, got {ncols!r}")
        return int(ncols)
    largest = max(s.planes.shape[0] for s in sections)
    h, w = sections[0].planes.shape[1:]
    if len(sections) == 1:
        return grid_shape(largest, w / h)[1]
    return min(largest, 8) if largest <= 8 else grid_shape(largest, w / h, max_cols=16)[1]


def _scale(plane, diverging=True):
    """``(kind, lo, hi)`` of a map's colour scale: ("signed", -m, m) or ("linear", lo, hi)."""
    finite = plane[np.isfinite(plane)]
    if finite.size == 0:
        return "linear", 0.0, 0.0
    lo, hi = float(finite.min()), float(finite.max())
    if diverging and lo < 0 < hi:
        m = max(-lo, hi)
        return "signed", -m, m
    return "linear", lo, hi


def _range_text(kind, lo, hi):
    if kind == "signed":
        return f"\u00b1{hi:.3g}"
    return f"{lo:.3g}" if lo == hi else f"{lo:.3g}..{hi:.3g}"


def _colorize(plane):
    """(H, W, 3) uint8 of one map by the module's colour rules; also its range text."""
    kind, lo, hi = _scale(plane)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "signed":
            t = np.clip(plane / hi, -1, 1)[..., None]
            rgb = np.where(t >= 0, t * np.array(POSITIVE), -t * np.array(NEGATIVE))
        else:
            t = (plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane)
            rgb = np.repeat(np.clip(t, 0, 1)[..., None], 3, axis=2)
    rgb = np.where(np.isnan(plane)[..., None], np.array(NAN_COLOR), rgb)
    return np.rint(rgb * 255).astype(np.uint8), _range_text(kind, lo, hi)


# --------------------------------------------------------------------------------------------
# The NumPy renderer


_BACKGROUND = 255
_TEXT = (20, 20, 20)
_MUTED = (110, 110, 110)
_BORDER = (170, 170, 170)
_RULE = (200, 200, 200)
_LINE = _images.GLYPH_HEIGHT + 3  # height of one line of scale-1 text


def _fit(plane_rgb, cell_h, cell_w):
    """Resize a map to fit a cell by an integer factor (nearest up, block mean down)."""
    h, w = plane_rgb.shape[:2]
    if h > cell_h or w > cell_w:
        f = max(-(-h // cell_h), -(-w // cell_w))
        h2, w2 = h // f, w // f
        blocks = plane_rgb[:h2 * f, :w2 * f].reshape(h2, f, w2, f, 3).astype(np.float32)
        return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)
    f = max(1, min(cell_h // h, cell_w // w))
    return np.repeat(np.repeat(plane_rgb, f, axis=0), f, axis=1)


def feature_map_grid(maps, *, titles=None, max_maps=None, index=0, layout="NCHW", ncols=None,
                     title=None, cell_size=None, footer=True):
    """Render feature maps as one RGB picture with NumPy only (no matplotlib).

    One section per layer (for a dict) with a heading naming the layer and its shape; each map
    in a framed cell titled with its filter name and its value range (``±m`` for signed maps,
    ``lo..hi`` otherwise). Small maps are enlarged by an integer factor (pixels stay square
    and sharp), large ones reduced by block averaging, so all cells have one size.

    Parameters
    ----------
    maps : array of shape (C, H, W), (N, C, H, W) or (H, W), or dict of str to such arrays
        E.g. ``Sequential.feature_maps(x)``.
    titles : list of str (for an array) or dict of layer name to list of str, optional
        One title per map (per channel). Default ``#0``, ``#1``, ...
    max_maps : int, optional
        Show at most this many maps per layer (the first ones).
    index : int, default 0
        Which image of a batch (4-D arrays) to show.
    layout : {"NCHW", "NHWC"}, default "NCHW"
    ncols : int, optional
        Cells per row (default: chosen from the number of maps).
    title : str, optional
        A heading over the whole picture.
    cell_size : int, optional
        Cell side in pixels (default: the largest map side, limited to 48..192).
    footer : bool, default True
        Explain the colour scales in a line at the bottom.

    Returns
    -------
    ndarray of uint8, shape (height, width, 3)

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.viz import feature_map_grid
    >>> feature_map_grid(np.random.default_rng(0).standard_normal((6, 20, 20))).shape
    (226, 182, 3)
    """
    sections = _sections(maps, titles, max_maps, index, layout)
    cols = _section_cols(sections, ncols)
    if cell_size is None:
        largest = max(max(s.planes.shape[1:]) for s in sections)
        cell_size = int(min(max(largest, 48), 192))
    cell_h = cell_w = int(cell_size)
    margin, gap = 10, 6
    chars = max(1, (cell_w + 1) // (_images.GLYPH_WIDTH + 1))
    cell_block = 2 * _LINE + cell_h + 2  # two title lines, the map, a 1-pixel frame
    heading_h = 2 * _images.GLYPH_HEIGHT + 8
    title_h = 2 * _images.GLYPH_HEIGHT + 12 if title else 0
    footer_lines = _footer_lines(sections, cols * (cell_w + 2 + gap)) if footer else []
    rows_per = [-(-s.planes.shape[0] // cols) for s in sections]
    width = 2 * margin + cols * (cell_w + 2) + (cols - 1) * gap
    height = (2 * margin + title_h
              + sum((heading_h if s.heading else 0) + r * cell_block + (r - 1) * gap + 10
                    for s, r in zip(sections, rows_per))
              + len(footer_lines) * _LINE)
    canvas = np.full((height, width, 3), _BACKGROUND, np.uint8)

    y = margin
    if title:
        _draw_fitting(canvas, y, margin, title, width - 2 * margin)
        y += title_h
    for number, (section, rows) in enumerate(zip(sections, rows_per)):
        if number:
            canvas[y - 6, margin:width - margin] = _RULE
        if section.heading:
            heading = section.heading
            if section.planes.shape[0] < section.total:
                heading += f"  first {section.planes.shape[0]} of {section.total}"
            _draw_fitting(canvas, y, margin, heading, width - 2 * margin)
            y += heading_h
        for i, (plane, label) in enumerate(zip(section.planes, section.labels)):
            r, c = divmod(i, cols)
            top = y + r * (cell_block + gap)
            left = margin + c * (cell_w + 2 + gap)
            rgb, range_text = _colorize(plane)
            _images.draw_text(canvas, top, left, label[:chars], _TEXT)
            _images.draw_text(canvas, top + _LINE, left, range_text[:chars], _MUTED)
            box_top = top + 2 * _LINE
            canvas[box_top:box_top + cell_h + 2, left:left + cell_w + 2] = _BORDER
            canvas[box_top + 1:box_top + cell_h + 1, left + 1:left + cell_w + 1] = _BACKGROUND
            shown = _fit(rgb, cell_h, cell_w)
            sh, sw = shown.shape[:2]
            oy, ox = box_top + 1 + (cell_h - sh) // 2, left + 1 + (cell_w - sw) // 2
            canvas[oy:oy + sh, ox:ox + sw] = shown
        y += rows * cell_block + (rows - 1) * gap + 10
    for line in footer_lines:
        _images.draw_text(canvas, y, margin, line, _MUTED)
        y += _LINE
    return canvas


def _draw_fitting(canvas, top, left, text, width):
    """Draw a heading at double size, or at normal size (cut to fit) when it is too wide."""
    if _images.text_width(text, 2) <= width:
        _images.draw_text(canvas, top, left, text, _TEXT, scale=2)
    else:
        chars = max(1, (width + 1) // (_images.GLYPH_WIDTH + 1))
        _images.draw_text(canvas, top + 4, left, text[:chars], _TEXT)


def _footer_lines(sections, width_px):
    signed = any(_scale(p)[0] == "signed" for s in sections for p in s.planes)
    text = "each map scaled on its own: gray = min (black) .. max (white)"
    if signed:
        text += "; signed maps: blue = negative, black = 0, orange = positive (\u00b1max |v|)"
    chars = max(10, width_px // (_images.GLYPH_WIDTH + 1))
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > chars:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line]


# --------------------------------------------------------------------------------------------
# matplotlib


def _signed_cmap(diverging):
    from matplotlib.colors import LinearSegmentedColormap

    if diverging is True:
        return LinearSegmentedColormap.from_list("fastconv_signed",
                                                 [NEGATIVE, (0.0, 0.0, 0.0), POSITIVE])
    return diverging  # a name or a Colormap


def _new_figure(fig, figsize):
    if fig is None:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize)
    fig.clear()
    fig.set_size_inches(*figsize)
    return fig


class _Placer:
    """Axes placed in inches, top to bottom, so the layout is tight and predictable."""

    def __init__(self, fig, width, height):
        self.fig, self.width, self.height = fig, width, height

    def axes(self, left, top, w, h):
        return self.fig.add_axes([left / self.width, 1 - (top + h) / self.height,
                                  w / self.width, h / self.height])

    def text(self, left, top, text, **kwargs):
        self.fig.text(left / self.width, 1 - top / self.height, text, ha="left", va="top",
                      **kwargs)


# Layout constants, inches.
_MARGIN, _HGAP, _VGAP, _SECTION_GAP, _HEADING, _SUPTITLE = 0.15, 0.12, 0.1, 0.22, 0.3, 0.38


def _show(ax, plane, cmap, diverging):
    """imshow one map with the module's colour rules; returns the range text."""
    import matplotlib
    from numpy import ma

    kind, lo, hi = _scale(plane, diverging is not False and diverging is not None)
    use = _signed_cmap(diverging) if kind == "signed" else cmap
    use = matplotlib.colormaps.get_cmap(use).with_extremes(bad=NAN_COLOR)
    ax.imshow(ma.masked_invalid(plane), cmap=use, vmin=lo, vmax=hi if hi > lo else lo + 1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.75")
    return _range_text(kind, lo, hi)


def plot_feature_maps(maps, *, titles=None, cmap="gray", max_maps=None, index=0,
                      layout="NCHW", ncols=None, diverging=True, show_range=True,
                      suptitle=None, cell_inches=None, footer=False, fig=None):
    """Plot feature maps in a grid; one section per layer for the output of
    :meth:`fastconv.layers.Sequential.feature_maps`.

    Needs matplotlib (``pip install fastconv[plots]``).

    Parameters
    ----------
    maps : array of shape (C, H, W), (N, C, H, W) or (H, W), or dict of str to such arrays
        A dict gives one titled section per entry (layer), in order.
    titles : list of str (for an array) or dict of layer name to list of str, optional
        One title per map, e.g. the filter names. Default ``#0``, ``#1``, ...
    cmap : str or Colormap, default "gray"
        Colour map of one-signed maps, scaled per map from its minimum to its maximum.
    max_maps : int, optional
        Show at most this many maps per layer (the first ones); the heading says so.
    index : int, default 0
        Which image of a batch to show.
    layout : {"NCHW", "NHWC"}, default "NCHW"
    ncols : int, optional
        Maps per row. Default: 1..4 maps in one row, otherwise a grid near 4:3 (256 maps:
        13 x 20); for several layers, up to 8 (or 16) columns shared by all sections.
    diverging : bool, str or Colormap, default True
        Colour of maps with both signs, symmetric around 0: True is fastconv's black-centred
        blue/orange scale, a name such as "RdBu_r" uses that map, False draws them with
        ``cmap`` from minimum to maximum.
    show_range : bool, default True
        Add each map's range (``±m`` or ``lo..hi``) under its title.
    suptitle : str, optional
    cell_inches : float, optional
        Longer side of one map, in inches. Default 1.5, smaller for many maps (the figure
        stays within about 12 x 12 inches).
    footer : bool, default False
        Explain the colour scales in a line at the bottom.
    fig : matplotlib.figure.Figure, optional
        Draw into this figure (cleared and resized). Default: a new ``pyplot.figure``.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Conv2D, ReLU, Sequential
    >>> from fastconv.viz import plot_feature_maps
    >>> net = Sequential({"conv": Conv2D.from_shape(1, 8, 3, seed=0), "relu": ReLU()})
    >>> maps = net.feature_maps(np.random.default_rng(0).random((1, 28, 28)))
    >>> fig = plot_feature_maps(maps, titles={"0:conv": [f"f{i}" for i in range(8)]})
    >>> fig.savefig("maps.png")                  # doctest: +SKIP
    """
    _require_matplotlib()
    sections = _sections(maps, titles, max_maps, index, layout)
    cols = _section_cols(sections, ncols)
    rows_per = [-(-s.planes.shape[0] // cols) for s in sections]
    h, w = sections[0].planes.shape[1:]
    if cell_inches is None:  # about 12 inches at most in either direction
        cell_inches = max(0.45, min(1.5, (12.0 - 0.12 * (cols - 1)) / cols,
                                    11.0 / sum(rows_per)))
    fontsize = 7 if cell_inches >= 1 else 5
    cell_w, cell_h = (cell_inches, cell_inches * h / w) if w >= h else \
        (cell_inches * w / h, cell_inches)
    label_h = (0.3 if show_range else 0.18) * fontsize / 7
    width = 2 * _MARGIN + cols * cell_w + (cols - 1) * _HGAP
    height = (2 * _MARGIN + (_SUPTITLE if suptitle else 0)
              + sum((_HEADING if s.heading else 0) + r * (label_h + cell_h) + (r - 1) * _VGAP
                    for s, r in zip(sections, rows_per))
              + (len(sections) - 1) * _SECTION_GAP + (0.25 if footer else 0))
    fig = _new_figure(fig, (width, height))
    place = _Placer(fig, width, height)
    top = _MARGIN
    if suptitle:
        fig.suptitle(suptitle, y=1 - 0.08 / height, va="top", fontsize=12, fontweight="bold")
        top += _SUPTITLE
    if footer:
        place.text(_MARGIN, height - _MARGIN - 0.2, " ".join(_footer_lines(sections, 10**6)),
                   fontsize=7, color="0.4")
    for section, rows in zip(sections, rows_per):
        if section.heading:
            heading = section.heading
            if section.planes.shape[0] < section.total:
                heading += f" (first {section.planes.shape[0]} of {section.total})"
            place.text(_MARGIN, top + 0.04, heading, fontsize=10, fontweight="bold")
            top += _HEADING
        for i, (plane, label) in enumerate(zip(section.planes, section.labels)):
            r, c = divmod(i, cols)
            ax = place.axes(_MARGIN + c * (cell_w + _HGAP),
                            top + r * (label_h + cell_h + _VGAP) + label_h, cell_w, cell_h)
            range_text = _show(ax, plane, cmap, diverging)
            ax.set_title(f"{label}\n{range_text}" if show_range else label, fontsize=fontsize,
                         pad=2, linespacing=1.1)
        top += rows * (label_h + cell_h) + (rows - 1) * _VGAP + _SECTION_GAP
    return fig


def plot_filters(weight, *, titles=None, cmap=None, annotate=None, max_filters=64,
                 max_channels=16, suptitle=None, cell_inches=1.1, fig=None):
    """Plot convolution kernels: one cell per (filter, input channel).

    Needs matplotlib (``pip install fastconv[plots]``).

    Parameters
    ----------
    weight : array of shape (F, C, KH, KW), (F, KH, KW) or (KH, KW)
        E.g. ``Conv2D.weight``.
    titles : list of str, optional
        One name per filter.
    cmap : str or Colormap, optional
        Default: fastconv's black-centred blue (negative) / orange (positive) scale. Each filter
        is scaled symmetrically by its largest ``|weight|`` over all its channels.
    annotate : bool, optional
        Write each weight's value in its pixel (default: when kernels are at most 5x5 and
        there are at most 64 cells).
    max_filters, max_channels : int, default 64 and 16
        Show at most this many filters and input channels.
    suptitle : str, optional
    cell_inches : float, default 1.1
        Longer side of one kernel, in inches.
    fig : matplotlib.figure.Figure, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.viz import plot_filters
    >>> sobel = np.array([[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]], np.float32)
    >>> fig = plot_filters(np.stack([sobel, sobel.transpose(0, 2, 1)]), titles=["x", "y"])
    """
    _require_matplotlib()
    import matplotlib

    w = np.asarray(weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weight must be a numeric array, got dtype {w.dtype}")
    if w.ndim == 2:
        w = w[None, None]
    elif w.ndim == 3:
        w = w[:, None]
    if w.ndim != 4 or 0 in w.shape:
        raise ValueError(f"weight must have shape (F, C, KH, KW), (F, KH, KW) or (KH, KW), "
                         f"got {np.shape(weight)}")
    w = w.astype(np.float64)
    n_filters, n_channels = w.shape[:2]
    names = _labels(titles, n_filters, lambda i: f"filter {i}", "titles")
    w, names = w[:max_filters, :max_channels], names[:max_filters]
    f_shown, c_shown, kh, kw = w.shape
    if c_shown == 1:
        rows, cols = grid_shape(f_shown, kw / kh)
        cells = [(i, 0) for i in range(f_shown)]
    else:
        rows, cols = f_shown, c_shown
        cells = [(i, c) for i in range(f_shown) for c in range(c_shown)]
    if annotate is None:
        annotate = kh <= 5 and kw <= 5 and len(cells) <= 64
    if suptitle is None and (f_shown < n_filters or c_shown < n_channels):
        suptitle = f"first {f_shown} of {n_filters} filters, {c_shown} of {n_channels} channels"
    cell_w = cell_inches * kw / max(kh, kw)
    cell_h = cell_inches * kh / max(kh, kw)
    label_h = 0.2
    width = max(2 * _MARGIN + cols * cell_w + (cols - 1) * _HGAP, 1.5)
    height = (2 * _MARGIN + (_SUPTITLE if suptitle else 0) + rows * (label_h + cell_h)
              + (rows - 1) * _VGAP)
    fig = _new_figure(fig, (width, height))
    place = _Placer(fig, width, height)
    top = _MARGIN
    if suptitle:
        fig.suptitle(suptitle, y=1 - 0.08 / height, va="top", fontsize=11)
        top += _SUPTITLE
    use = matplotlib.colormaps.get_cmap(_signed_cmap(True) if cmap is None else cmap)
    fontsize = max(4.0, min(8.0, 72 * cell_w / kw / 4.2))
    for number, (i, c) in enumerate(cells):
        r, q = divmod(number, cols)
        ax = place.axes(_MARGIN + q * (cell_w + _HGAP), top + r * (label_h + cell_h + _VGAP)
                        + label_h, cell_w, cell_h)
        m = float(np.nanmax(np.abs(w[i]))) or 1.0
        kernel = w[i, c]
        ax.imshow(kernel, cmap=use, vmin=-m, vmax=m, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if c_shown == 1:
            label = names[i]
        else:
            label = f"{names[i]}, in {c}" if c == 0 else f"in {c}"
        ax.set_title(label, fontsize=7, pad=2)
        if annotate:
            for (y, x), value in np.ndenumerate(kernel):
                ax.text(x, y, f"{value:.2g}", ha="center", va="center", fontsize=fontsize,
                        color="black" if abs(value) > 0.55 * m else "white")
    return fig


# --------------------------------------------------------------------------------------------
# Saving


def save_feature_maps(maps, path, *, renderer="auto", titles=None, max_maps=None, index=0,
                      layout="NCHW", ncols=None, title=None, dpi=110):
    """Write a PNG of feature maps; return the renderer used ("matplotlib" or "builtin").

    Parameters
    ----------
    maps, titles, max_maps, index, layout, ncols
        As in :func:`feature_map_grid` / :func:`plot_feature_maps`.
    path : str or os.PathLike
    renderer : {"auto", "matplotlib", "builtin"}, default "auto"
        "auto" uses matplotlib when it is installed and the built-in NumPy renderer (with its
        own PNG writer) otherwise.
    title : str, optional
    dpi : int, default 110
        matplotlib only.
    """
    if renderer not in ("auto", "matplotlib", "builtin"):
        raise ValueError(f"renderer must be 'auto', 'matplotlib' or 'builtin', got {renderer!r}")
    if renderer == "matplotlib" or (renderer == "auto" and _have_matplotlib()):
        _require_matplotlib()
        from matplotlib.figure import Figure

        fig = plot_feature_maps(maps, titles=titles, max_maps=max_maps, index=index,
                                layout=layout, ncols=ncols, suptitle=title, footer=True,
                                fig=Figure())
        try:
            fig.savefig(os.fspath(path), dpi=dpi, format="png", facecolor="white")
        except OSError as exc:
            raise _images.ImageError(f"cannot write {os.fspath(path)!r}: "
                                     f"{exc.strerror or exc}") from None
        return "matplotlib"
    grid = feature_map_grid(maps, titles=titles, max_maps=max_maps, index=index, layout=layout,
                            ncols=ncols, title=title)
    _images.write_png(path, grid)
    return "builtin"
