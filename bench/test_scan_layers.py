"""The random layers of ``bench/scan_layers.py`` are reproducible and valid convolutions."""

import scan_layers


def test_random_layers_repeat_for_a_seed_and_differ_across_seeds():
    first = scan_layers.random_layers(21, 12)
    assert list(first) == [f"r21_{i}" for i in range(12)]
    assert scan_layers.random_layers(21, 12) == first
    assert scan_layers.random_layers(22, 12) != first


def test_random_layers_are_valid_and_in_the_flop_range():
    for n, c, h, w, f, (kh, kw), (sh, sw), (ph, pw), d, g in \
            scan_layers.random_layers(7, 60).values():
        assert c % g == 0 and f % g == 0
        out_h = (h + 2 * ph - d * (kh - 1) - 1) // sh + 1
        out_w = (w + 2 * pw - d * (kw - 1) - 1) // sw + 1
        assert out_h >= 1 and out_w >= 1
        assert 2e6 <= 2 * n * f * out_h * out_w * (c // g) * kh * kw <= 6e8


def test_scan_prints_a_row_per_layer(capsys):
    layer = (1, 4, 9, 9, 8, (3, 3), (1, 1), (1, 1), 1, 1)
    scan_layers.scan({"tiny": layer}, threads=1, rounds=1)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny ")]
    assert len(rows) == 1
