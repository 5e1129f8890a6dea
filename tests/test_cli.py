"""The ``fastconv`` command line and the examples: ``python -m fastconv`` in a subprocess,
``main()`` in-process.

Subprocesses run in a temporary directory (the demo writes its PNG into the current directory)
with the imported fastconv first on PYTHONPATH. "Without Pillow / matplotlib" is simulated by a
directory of stub packages, first on PYTHONPATH, whose import raises ImportError.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import _bench, _cli, _config, _images

PACKAGE_ROOT = Path(fastconv.__file__).resolve().parents[1]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"  # the repository's, beside tests/


def run_cli(*args, cwd, timeout=180, block=(), env_extra=None):
    """Run ``python -m fastconv ARGS`` in ``cwd``; ``block`` names packages to make
    unimportable (e.g. ("PIL",))."""
    paths = [str(PACKAGE_ROOT)]
    if block:
        stubs = Path(cwd) / "_blocked_packages"
        for name in block:
            (stubs / name).mkdir(parents=True, exist_ok=True)
            (stubs / name / "__init__.py").write_text(
                f"raise ImportError('{name} is blocked for this test')\n")
        paths.insert(0, str(stubs))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        paths + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        MPLBACKEND="Agg")
    env.pop("FASTCONV_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "fastconv", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def numbers_in(line):
    return [float(token) for token in re.findall(r"[-+]?\d+(?:\.\d+)?", line)]


def have(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def assert_one_line_error(result, *mentions, status=None):
    assert result.returncode != 0, result.stdout
    if status is not None:
        assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastconv: error:"), lines[0]
    for mention in mentions:
        assert mention in lines[0], lines[0]
    return lines[0]


def read_png(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return _images.decode_png(data)


def write_test_image(path, height=40, width=60):
    """An RGB PNG (own encoder): a gradient with a bright square and a dark vertical bar."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=2)
    rgb[height // 4:height // 2, width // 4:width // 2] = 250
    rgb[:, width * 3 // 4:width * 3 // 4 + 3] = 5
    _images.write_png(path, rgb.astype(np.uint8))
    return path


# --------------------------------------------------------------------------------------------
# demo


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def demo_run(demo_dir):
    return run_cli("demo", cwd=demo_dir)


def test_demo_exits_zero(demo_run):
    assert demo_run.returncode == 0, demo_run.stderr
    assert demo_run.stderr == ""


def test_demo_prints_the_seed_example_true_values(demo_run):
    lines = demo_run.stdout.splitlines()
    rows = [numbers_in(line) for line in lines]
    assert rows.count([-8, -8, -8]) >= 3  # the horizontal-edge map
    for expected in ([7, 9, 11], [15, 17, 19], [23, 25, 27]):  # the diagonal map
        assert expected in rows
    assert [1, 2, 3, 4] in rows and [13, 14, 15, 16] in rows  # the image
    assert "+8" in demo_run.stdout  # true convolution flips the kernel
    assert "cross-correlation" in demo_run.stdout


def test_demo_prints_summary_maps_and_timing(demo_run):
    out = demo_run.stdout
    assert "receptive field" in out and "jump" in out and "total parameters: 486" in out
    summary_rows = [line.split() for line in out.splitlines()
                    if re.match(r"\s+\d+:(conv|relu|pool)\d\s+\([\d, ]+\)\s+[\d,]+\s+\d+\s+\d+$",
                                line)]
    assert [row[0] for row in summary_rows] == ["0:conv1", "1:relu1", "2:pool1", "3:conv2",
                                                "4:relu2", "5:pool2"]
    assert [row[-2:] for row in summary_rows] == [["3", "1"], ["3", "1"], ["4", "2"],
                                                  ["8", "2"], ["8", "2"], ["10", "4"]]
    assert "(1, 8, 32, 32)" in out  # the bundled 128x128 image after two 2x2 poolings
    for name in _cli.DEMO_FILTERS:
        assert f"{name} (max " in out
    assert "@" in out  # ASCII shading of the image and the maps
    assert re.search(r"timing: .* in \d+\.\d+ ms", out)
    assert re.search(r"0:conv1 +\(1, 1, 128, 128\) +\d+\.\d+ +\d+\.\d GFLOP/s", out)


def test_demo_writes_a_png_of_every_layer(demo_run, demo_dir):
    assert "wrote fastconv_demo.png" in demo_run.stdout
    pixels = read_png(demo_dir / "fastconv_demo.png")
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    height, width = pixels.shape[:2]
    assert 600 <= height <= 4000 and 600 <= width <= 4000  # 7 sections, up to 8 maps wide
    rgb = pixels[:, :, :3].astype(int)
    assert (rgb.std(axis=(0, 1)) > 20).all()  # not blank


def test_demo_builtin_renderer(tmp_path):
    result = run_cli("demo", "--renderer", "builtin", "--out", "maps.png", "--threads", "1",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "builtin renderer" in result.stdout and "1 thread," in result.stdout
    rgb = read_png(tmp_path / "maps.png").astype(int)
    assert rgb.shape[2] == 3 and rgb.shape[0] > 1000 and rgb.shape[1] > 1000
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    orange = (r > 150) & (r - b > 80)  # positive values of the signed conv maps
    blue = (b > 150) & (b - r > 80)  # negative values
    gray = (r == g) & (g == b) & (r > 100) & (r < 250)  # ReLU / pooled maps and the input
    assert orange.sum() > 500 and blue.sum() > 500 and gray.sum() > 5000


def test_demo_without_matplotlib_uses_the_builtin_writer(tmp_path):
    result = run_cli("demo", "--threads", "1", cwd=tmp_path, block=("matplotlib",))
    assert result.returncode == 0, result.stderr
    assert "builtin renderer" in result.stdout
    assert read_png(tmp_path / "fastconv_demo.png").shape[2] == 3


def test_demo_with_a_user_png(tmp_path):
    write_test_image(tmp_path / "mine.png", 40, 60)
    result = run_cli("demo", "--image", "mine.png", "--no-png", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "input: mine.png (60x40 gray)" in result.stdout
    assert "(1, 8, 10, 15)" in result.stdout  # 40x60 -> 20x30 -> 10x15
    assert not (tmp_path / "fastconv_demo.png").exists()


def test_demo_shrinks_a_large_image(tmp_path):
    write_test_image(tmp_path / "big.png", 300, 520)
    result = run_cli("demo", "--image", "big.png", "--out", "big_maps.png", "--renderer",
                     "builtin", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "big.png (173x100 gray, shrunk from 520x300" in result.stdout
    assert read_png(tmp_path / "big_maps.png").ndim == 3


@pytest.mark.skipif(not have("PIL"), reason="JPEG needs Pillow")
def test_demo_with_a_user_jpeg(tmp_path):
    from PIL import Image

    Image.fromarray(read_png(write_test_image(tmp_path / "a.png"))).save(tmp_path / "a.jpg")
    result = run_cli("demo", "--image", "a.jpg", "--no-png", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "input: a.jpg (60x40 gray)" in result.stdout


# --------------------------------------------------------------------------------------------
# featuremaps


def test_featuremaps_named_filters_png_and_npz(tmp_path):
    write_test_image(tmp_path / "img.png", 40, 60)
    result = run_cli("featuremaps", "img.png", "--filters", "sobel-x,sobel-y,laplacian",
                     "--out", "maps.png", "--npz", "maps.npz", "--relu", "--pool", "2",
                     "--renderer", "builtin", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote maps.png" in result.stdout and "wrote maps.npz" in result.stdout
    with np.load(tmp_path / "maps.npz") as archive:
        assert list(archive["names"]) == ["sobel-x", "sobel-y", "laplace"]
        assert archive["input"].shape == (1, 40, 60)
        assert archive["weight"].shape == (3, 1, 3, 3)
        assert archive["conv"].shape == (3, 40, 60)  # padding "same" by default
        assert archive["relu"].shape == (3, 40, 60) and archive["relu"].min() >= 0
        assert archive["pool"].shape == (3, 20, 30)
        expected = fastconv.conv2d(archive["input"][None], archive["weight"], padding="same")
        np.testing.assert_allclose(archive["conv"], expected[0], rtol=1e-5, atol=1e-6)
        gray = _images.to_gray(read_png(tmp_path / "img.png"))  # what the CLI read
        np.testing.assert_allclose(archive["input"][0], gray)
        # the dark vertical bar at columns 45..47: dark-to-bright on its right side
        assert archive["conv"][0, 1:-1, 47].min() > 0.8 > archive["conv"][0, 1:-1, 40].max()
    assert read_png(tmp_path / "maps.png").shape[2] == 3


def test_featuremaps_weights_file_rgb_stride_padding(tmp_path):
    write_test_image(tmp_path / "img.png", 40, 60)
    weight = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    np.save(tmp_path / "w.npy", weight)
    result = run_cli("featuremaps", "img.png", "--weights", "w.npy", "--stride", "2",
                     "--padding", "valid", "--npz", "out.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rgb" in result.stdout and "(1, 4, 18, 28)" in result.stdout
    assert not (tmp_path / "featuremaps.png").exists()  # --npz only: no picture
    with np.load(tmp_path / "out.npz") as archive:
        assert archive["input"].shape == (3, 40, 60)
        assert archive["conv"].shape == (4, 18, 28)
        expected = fastconv.conv2d(archive["input"][None], weight, stride=2)[0]
        np.testing.assert_allclose(archive["conv"], expected, rtol=1e-5, atol=1e-5)


def test_featuremaps_sample_default_filters(tmp_path):
    result = run_cli("featuremaps", "sample", "--padding", "1,1", "--dilation", "2",
                     "--renderer", "builtin", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the bundled sample image" in result.stdout
    assert "(1, 6, 126, 126)" in result.stdout  # 128 + 2 - 2 * (3 - 1) - 1 + 1
    assert "wrote featuremaps.png" in result.stdout
    read_png(tmp_path / "featuremaps.png")


def test_named_filters():
    weight, names = _cli.named_filters("Sobel_X, laplacian ,blur")
    assert names == ["sobel-x", "laplace", "box"] and weight.shape == (3, 1, 3, 3)
    np.testing.assert_array_equal(weight[0, 0], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert abs(weight[2].sum() - 1) < 1e-6
    for name in _cli.DEMO_FILTERS:  # the demo's printed names are accepted too
        _cli.named_filters(name)
    with pytest.raises(_cli.UsageError, match="unknown filter 'sobel-z'"):
        _cli.named_filters("sobel-x,sobel-z")
    with pytest.raises(_cli.UsageError, match="same size"):
        _cli.named_filters("seed-diagonal,sobel-x")


# --------------------------------------------------------------------------------------------
# errors: one line on stderr, non-zero status, no traceback


@pytest.mark.parametrize("args, mention, status", [
    (["frobnicate"], "frobnicate", 2),
    ([], "missing command", 2),
    (["demo", "--threads", "0"], "--threads", 2),
    (["demo", "--threads", "many"], "--threads", 2),
    (["demo", "--bogus"], "--bogus", 2),
    (["demo", "--renderer", "svg"], "--renderer", 2),
    (["info", "extra"], "extra", 2),
    (["demo", "--image", "missing.png"], "no such file: 'missing.png'", 1),
    (["demo", "--image", "notes.txt"], "not a PNG or JPEG", 1),
    (["demo", "--image", "."], "is a directory", 1),
    (["demo", "--image", "broken.png"], "corrupt PNG", 1),
    (["demo", "--image", "tiny.png"], "at least 4x4", 1),
    (["demo", "--out", "no/such/dir/x.png", "--renderer", "builtin"], "cannot write", 1),
    (["featuremaps"], "IMAGE", 2),
    (["featuremaps", "missing.png"], "no such file", 1),
    (["featuremaps", "ok.png", "--filters", "sobel-x,edgy"], "unknown filter 'edgy'", 2),
    (["featuremaps", "ok.png", "--filters", ","], "--filters is empty", 2),
    (["featuremaps", "ok.png", "--filters", "seed-diagonal,laplace"], "same size", 2),
    (["featuremaps", "ok.png", "--weights", "bad_shape.npy"], "expected (F, C, KH, KW)", 1),
    (["featuremaps", "ok.png", "--weights", "five_channels.npy"], "C = 5", 1),
    (["featuremaps", "ok.png", "--weights", "notes.txt"], "cannot read 'notes.txt'", 1),
    (["featuremaps", "ok.png", "--weights", "nope.npy"], "no such file", 1),
    (["featuremaps", "ok.png", "--filters", "sobel-x", "--weights", "w.npy"], "not allowed", 2),
    (["featuremaps", "ok.png", "--stride", "0"], "--stride", 2),
    (["featuremaps", "ok.png", "--padding", "lots"], "--padding", 2),
    (["featuremaps", "ok.png", "--padding", "1,2,3"], "--padding", 2),
    (["featuremaps", "ok.png", "--padding", "valid", "--dilation", "40"], "Kernel size", 1),
    (["featuremaps", "ok.png", "--pool", "0"], "--pool", 2),
    (["bench", "--bogus-option"], "--bogus-option", 2),
])
def test_user_errors_are_one_clean_line(tmp_path, args, mention, status):
    (tmp_path / "notes.txt").write_text("not an image\n")
    data = _images.encode_png(np.zeros((8, 8), np.uint8))
    (tmp_path / "broken.png").write_bytes(data[:-20])
    _images.write_png(tmp_path / "tiny.png", np.zeros((2, 9), np.uint8))
    _images.write_png(tmp_path / "ok.png", np.zeros((12, 12), np.uint8))
    np.save(tmp_path / "bad_shape.npy", np.zeros((1, 2, 3, 4, 5)))
    np.save(tmp_path / "five_channels.npy", np.zeros((2, 5, 3, 3)))
    np.save(tmp_path / "w.npy", np.zeros((2, 1, 3, 3)))
    result = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(result, mention, status=status)
    if status == 2:
        assert result.stdout == ""


def test_jpeg_without_pillow_says_what_to_install(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    result = run_cli("demo", "--image", "photo.jpg", cwd=tmp_path, block=("PIL",))
    assert_one_line_error(result, "Pillow", "pip install fastconv[plots]", status=1)


def test_matplotlib_renderer_without_matplotlib(tmp_path):
    result = run_cli("demo", "--renderer", "matplotlib", cwd=tmp_path, block=("matplotlib",))
    assert_one_line_error(result, "pip install fastconv[plots]", status=2)


def test_debug_environment_variable_shows_the_traceback(tmp_path):
    result = run_cli("demo", "--image", "missing.png", cwd=tmp_path,
                     env_extra={"FASTCONV_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


# --------------------------------------------------------------------------------------------
# info, bench, help, in-process


def test_info_prints_config(tmp_path):
    result = run_cli("info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert fastconv.__version__ in result.stdout
    assert "openmp" in result.stdout and "default_threads" in result.stdout


def test_version_and_help(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"fastconv {fastconv.__version__}"
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("demo", "featuremaps", "bench", "info"):
        assert command in result.stdout
    result = run_cli("featuremaps", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "sobel-x" in result.stdout and "laplace" in result.stdout


def test_bench_help_offers_peers(tmp_path):
    if _cli._bench_module()[0] is None:
        pytest.skip("fastconv._bench is not available")
    result = run_cli("bench", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--peers" in result.stdout


def test_bench_delegates_with_a_quick_default(monkeypatch, capsys):
    module, problem = _cli._bench_module()
    if module is None:
        pytest.skip(problem)
    seen = {}

    def fake_run(args):
        seen.update(vars(args))
        return "| the report |\n"

    monkeypatch.setattr(module, "run", fake_run)
    assert _cli.main(["bench", "--peers"]) == 0
    assert capsys.readouterr().out == "| the report |\n"
    assert seen["peers"] is True and seen["rounds"] == _cli.BENCH_QUICK_ROUNDS

    def failing_run(args):
        raise SystemExit("unknown layer(s): nope; known: a, b")

    monkeypatch.setattr(module, "run", failing_run)
    assert _cli.main(["bench", "--layers", "nope"]) == 2
    assert capsys.readouterr().err.strip() == "fastconv: error: unknown layer(s): nope; known: a, b"


def test_bench_missing_engine_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(_cli, "_bench_module", lambda: (None, "fastconv._bench is missing"))
    assert _cli.main(["bench", "--peers"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not available" in err[0] and "_bench is missing" in err[0]


def test_main_in_process(capsys):
    assert _cli.main(["info"]) == 0
    assert "isa_selected" in capsys.readouterr().out
    assert _cli.main(["nope"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "invalid choice" in captured.err


def test_console_script_if_installed(tmp_path):
    script = shutil.which("fastconv")
    if script is None:
        pytest.skip("the fastconv console script is not installed (pip install . provides it)")
    result = subprocess.run([script, "info"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0 and fastconv.__version__ in result.stdout


def test_demo_helpers():
    image = _images.sample_image()
    assert image.shape == (128, 128) and image.dtype == np.float32
    assert 0 <= image.min() < 0.1 and 0.9 < image.max() <= 1
    stack, names = _cli.demo_stack()
    assert names["0:conv1"] == list(_cli.DEMO_FILTERS) and len(names) == len(stack)
    assert len(names["3:conv2"]) == stack[3].out_channels == _cli.DEMO_RANDOM_FILTERS
    maps = stack.feature_maps(image[None, None])
    pooled = maps["2:pool1"][0]
    assert pooled.shape == (6, 64, 64) and (pooled >= 0).all()
    assert all(pooled[i].max() > 0.5 for i in range(len(_cli.DEMO_FILTERS)))
    assert maps["5:pool2"].shape == (1, 8, 32, 32)
    # orientation selectivity on the sample: the rectangle (rows 8..37, columns 8..49, bright
    # on darker gray) has its bottom edge in 'horizontal edge' and its right edge in
    # 'vertical edge', and neither in the other
    relu = maps["1:relu1"][0]
    bottom, right = relu[:, 37:39, 15:40], relu[:, 12:34, 49:51]
    assert bottom[0].max() > 1 and right[0].max() < 0.05
    assert right[1].max() > 1 and bottom[1].max() < 0.05
    art = _cli.ascii_map(np.array([[0.0, 1.0], [0.5, np.nan]]))
    assert art == ["+----+", "|  @@|", "|==  |", "+----+"]  # 0.5 -> level 4 of 9


# --------------------------------------------------------------------------------------------
# examples


def run_example(name, *args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PACKAGE_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                               if p]), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
                          check=False)


needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(),
                                    reason="examples/ is not next to this fastconv")


@needs_examples
def test_example_edge_detection(tmp_path):
    result = run_example("edge_detection.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "all checks passed" in out
    assert "-8." in out and "[23. 25. 27.]" in out
    assert re.search(r"rows 8\.\.17, columns 8\.\.17 -> 10x10; the layer arithmetic says 10",
                     out)


@needs_examples
def test_example_pipeline(tmp_path):
    result = run_example("pipeline.py", "--quick", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    accuracy = {}
    for line in result.stdout.splitlines():
        match = re.match(r"\s+(raw pixels|edge maps \(layer 1\)|edge \+ random maps "
                         r"\(layers 1\+2\))\s+([\d.]+)%\s+([\d.]+)%", line)
        if match:
            accuracy[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    assert len(accuracy) == 3, result.stdout
    assert min(accuracy["edge + random maps (layers 1+2)"]) > 85
    assert max(accuracy["raw pixels"]) < 60


@needs_examples
def test_sample_image_is_up_to_date(tmp_path):
    result = run_example("make_sample_image.py", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _images.SAMPLE_IMAGE_PATH.stat().st_size < 100_000


def test_peak_probe_counts_its_operations():
    """The bench's peak comes from the kernels' probe: 12 chains x lanes x 2 FLOPs a step."""
    kernels = _config.load_kernels("conv")
    for dtype, lanes in (("float32", kernels.LANES_FLOAT32), ("float64", kernels.LANES_FLOAT64)):
        flops, checksum = kernels.peak_probe(dtype, 1000)
        assert flops == 2 * 12 * lanes * 1000
        assert np.isfinite(checksum)
    assert _bench.peak_gflops("float32", 1) > 0


def test_kernels_load_from_their_own_package(tmp_path):
    """A copy of the package under another name (vendored, or an older build kept for an A/B
    run) uses its own compiled kernels, not those of the installed fastconv."""
    copy = tmp_path / "fastconv_copy"
    shutil.copytree(Path(fastconv.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.html"))
    script = ("import sys, numpy as np, fastconv_copy\n"
              "from fastconv_copy import conv, pool, activation\n"
              "names = [m._kernels.__name__ for m in (conv, pool, activation)]\n"
              "assert all(n.startswith('fastconv_copy._') for n in names), names\n"
              "assert 'fastconv' not in sys.modules, sorted(sys.modules)\n"
              "x = np.arange(16.0).reshape(1, 1, 4, 4)\n"
              "print(fastconv_copy.conv2d(x, np.ones((1, 1, 2, 2))).sum())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == 270.0


def test_peak_can_be_set(monkeypatch):
    monkeypatch.setenv("FASTCONV_PEAK_GFLOPS", "400")
    assert _bench.peak_gflops("float32", _bench.PEAK_CORES) == 400
    assert _bench.peak_gflops("float64", _bench.PEAK_CORES) == 200
    monkeypatch.setenv("FASTCONV_PEAK_GFLOPS_FLOAT64", "150")
    assert _bench.peak_gflops("float64", _bench.PEAK_CORES) == 150
