"""The ``fastconv`` command line: ``python -m fastconv`` in a subprocess, ``main()`` in-process."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _cli


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def numbers_in(line):
    return [float(token) for token in re.findall(r"[-+]?\d+(?:\.\d+)?", line)]


@pytest.fixture(scope="module")
def demo_run():
    return run_cli("demo")


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
    assert "receptive field" in out and "jump" in out and "total parameters: 54" in out
    summary_rows = [line.split() for line in out.splitlines()
                    if re.match(r"\s+\d+:(edges|relu|pool)\s", line)]
    assert [row[0] for row in summary_rows] == ["0:edges", "1:relu", "2:pool"]
    assert [row[-2:] for row in summary_rows] == [["3", "1"], ["3", "1"], ["4", "2"]]
    for name in _cli.DEMO_FILTERS:
        assert f"{name} (max " in out
    assert "@" in out  # ASCII shading of the image and the maps
    assert re.search(r"timing: .* in \d+\.\d+ ms", out)


def test_demo_options():
    result = run_cli("demo", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "1 thread," in result.stdout


def test_info_prints_config():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert fastconv.__version__ in result.stdout
    assert "openmp" in result.stdout and "default_threads" in result.stdout


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"fastconv {fastconv.__version__}"
    result = run_cli("--help")
    assert result.returncode == 0 and "demo" in result.stdout and "info" in result.stdout


@pytest.mark.parametrize("args, mention", [
    (["frobnicate"], "frobnicate"),
    ([], "missing command"),
    (["demo", "--threads", "0"], "--threads"),
    (["demo", "--threads", "many"], "--threads"),
    (["demo", "--bogus"], "--bogus"),
    (["info", "extra"], "extra"),
])
def test_user_errors_are_one_clean_line(args, mention):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastconv: error:") and mention in lines[0]
    assert result.stdout == ""


def test_main_in_process(capsys):
    assert _cli.main(["info"]) == 0
    assert "isa_selected" in capsys.readouterr().out
    assert _cli.main(["nope"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "invalid choice" in captured.err


def test_console_script_if_installed():
    script = shutil.which("fastconv")
    if script is None:
        pytest.skip("the fastconv console script is not installed (pip install . provides it)")
    result = subprocess.run([script, "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and fastconv.__version__ in result.stdout


def test_demo_helpers():
    image = _cli.synthetic_image(32)
    assert image.shape == (32, 32) and image.dtype == np.float32
    assert set(np.unique(image)) == {0.0, 1.0}
    stack, names = _cli.demo_stack()
    assert names == list(_cli.DEMO_FILTERS) and len(names) == stack[0].out_channels
    maps = stack.feature_maps(image[None, None])
    pooled = maps["2:pool"][0]
    assert pooled.shape == (6, 16, 16) and (pooled >= 0).all()
    assert all(pooled[i].max() > 0 for i in range(len(names)))  # every filter finds something
    art = _cli.ascii_map(np.array([[0.0, 1.0], [0.5, np.nan]]))
    assert art == ["+----+", "|  @@|", "|==  |", "+----+"]  # 0.5 -> level 4 of 9
