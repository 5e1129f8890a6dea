#!/usr/bin/env python
"""A NumPy pipeline: images -> feature maps -> pooled features -> a classic classifier.

No training of filters and no framework: fixed, hand-made edge filters, then seeded random
filters over the edge maps (fastconv.layers: Conv2D -> ReLU -> MaxPool2D, twice) turn each
image into a short vector of "how strongly does each pattern occur", and a nearest-centroid
classifier (and a least-squares linear one) is fitted on those vectors with plain NumPy.

The data are synthetic 32x32 shapes drawn at random positions, sizes and contrasts, with
noise: squares, diamonds, discs, plus signs and crosses (x). Raw pixels classify them badly,
because a shape can be anywhere; globally pooled feature maps do not care where, so the same
simple classifiers do much better, and the second layer (combinations of edges: corners, bars)
adds what edge orientations alone miss (a plus and a square have the same edges).

    python examples/pipeline.py              # 1000 training and 500 test images
    python examples/pipeline.py --quick      # a few hundred, for a smoke test
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import fastconv
except ImportError:  # a source checkout built in place
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastconv  # noqa: F401
from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential

CLASSES = ["square", "diamond", "disc", "plus", "cross"]
SIZE = 32


# --------------------------------------------------------------------------------------------
# 1. data


def draw_shape(kind, rng):
    """One (32, 32) float32 image of ``kind`` at a random place, size and contrast, noisy."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    radius = rng.uniform(5, 10)
    cy, cx = rng.uniform(radius + 1, SIZE - radius - 1, size=2)
    dy, dx = (y - cy) / radius, (x - cx) / radius
    thickness = rng.uniform(0.2, 0.35)
    if kind == "square":
        mask = np.maximum(np.abs(dy), np.abs(dx)) < 0.8
    elif kind == "diamond":
        mask = np.abs(dy) + np.abs(dx) < 1.0
    elif kind == "disc":
        mask = np.hypot(dy, dx) < 0.9
    elif kind == "plus":
        mask = (((np.abs(dy) < thickness) & (np.abs(dx) < 1))
                | ((np.abs(dx) < thickness) & (np.abs(dy) < 1)))
    elif kind == "cross":
        u, v = (dy + dx) / np.sqrt(2), (dy - dx) / np.sqrt(2)
        mask = (((np.abs(u) < thickness) & (np.abs(v) < 1))
                | ((np.abs(v) < thickness) & (np.abs(u) < 1)))
    else:
        raise ValueError(kind)
    background, foreground = rng.uniform(0.0, 0.3), rng.uniform(0.6, 1.0)
    image = np.where(mask, foreground, background) + rng.normal(0, 0.05, (SIZE, SIZE))
    return image.astype(np.float32)


def make_dataset(count, rng):
    """(count, 1, 32, 32) images and (count,) labels, classes balanced and shuffled."""
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    images = np.stack([draw_shape(CLASSES[k], rng) for k in labels])[:, None]
    return images, labels


# --------------------------------------------------------------------------------------------
# 2. features


def edge_filters():
    """Eight 3x3 edge filters, one per 45-degree step of the edge's normal (both polarities
    are separate filters, because ReLU keeps one sign)."""
    horizontal = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)  # Sobel
    diagonal = np.array([[2, 1, 0], [1, 0, -1], [0, -1, -2]], np.float32)
    filters = []
    for base in (horizontal, diagonal):
        for turns in range(4):
            filters.append(np.rot90(base, turns))
    return np.stack(filters)[:, None]  # (8, 1, 3, 3)


def feature_stack(random_filters=32, seed=0):
    """conv1 (8 edge filters) -> ReLU -> 2x2 max pool -> conv2 (seeded random 3x3 filters over
    the 8 edge maps: corners, bars, curves...) -> ReLU -> 2x2 max pool."""
    return Sequential({
        "edges": Conv2D(edge_filters(), padding=1, padding_mode="replicate"),
        "relu1": ReLU(), "pool1": MaxPool2D(2),
        "mix": Conv2D.from_shape(8, random_filters, 3, padding=1, seed=seed),
        "relu2": ReLU(), "pool2": MaxPool2D(2)})


def features(stack, images, layers=("2:pool1", "5:pool2"), num_threads=None):
    """Global mean and max of every map of the chosen layers (position-free), normalised by the
    vector's length so contrast does not matter. Returns (N, 2 * maps) float64."""
    maps = stack.feature_maps(images, num_threads=num_threads)
    parts = []
    for key in layers:
        parts += [maps[key].mean(axis=(2, 3)), maps[key].max(axis=(2, 3))]
    vector = np.concatenate(parts, axis=1).astype(np.float64)
    return vector / (np.linalg.norm(vector, axis=1, keepdims=True) + 1e-6)


# --------------------------------------------------------------------------------------------
# 3. classifiers (NumPy only)


class NearestCentroid:
    """Standardise features, then assign each sample to the class with the nearest mean."""

    def fit(self, x, y):
        self.mu, self.sigma = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - self.mu) / self.sigma
        self.centroids = np.stack([z[y == k].mean(axis=0) for k in range(len(CLASSES))])
        return self

    def predict(self, x):
        z = (x - self.mu) / self.sigma
        distances = ((z[:, None, :] - self.centroids[None]) ** 2).sum(axis=2)
        return distances.argmin(axis=1)


class LeastSquares:
    """A linear classifier: ridge regression onto one-hot labels, argmax of the scores."""

    def __init__(self, ridge=1e-2):
        self.ridge = ridge

    def fit(self, x, y):
        self.mu, self.sigma = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = np.hstack([(x - self.mu) / self.sigma, np.ones((len(x), 1))])
        targets = np.eye(len(CLASSES))[y]
        gram = z.T @ z + self.ridge * len(x) * np.eye(z.shape[1])
        self.w = np.linalg.solve(gram, z.T @ targets)
        return self

    def predict(self, x):
        z = np.hstack([(x - self.mu) / self.sigma, np.ones((len(x), 1))])
        return (z @ self.w).argmax(axis=1)


def confusion(y_true, y_pred):
    matrix = np.zeros((len(CLASSES), len(CLASSES)), int)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def print_confusion(matrix):
    width = max(len(c) for c in CLASSES)
    print("    " + " " * (width + 2) + " ".join(f"{c[:7]:>7}" for c in CLASSES) + "   <- predicted")
    for name, row in zip(CLASSES, matrix):
        print(f"    {name:>{width}}: " + " ".join(f"{v:>7}" for v in row))


# --------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="images -> feature maps -> pooled features "
                                     "-> nearest centroid, with fastconv and NumPy")
    parser.add_argument("--train", type=int, default=1000, help="training images")
    parser.add_argument("--test", type=int, default=500, help="test images")
    parser.add_argument("--quick", action="store_true", help="250 training, 250 test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.test = 250, 250
    rng = np.random.default_rng(args.seed)

    print(f"1. data: {args.train} training and {args.test} test images of "
          f"{', '.join(CLASSES)} ({SIZE}x{SIZE}, random place, size, contrast, noise)")
    x_train, y_train = make_dataset(args.train, rng)
    x_test, y_test = make_dataset(args.test, rng)

    stack = feature_stack(seed=args.seed)
    print("\n2. features: fixed edge filters and seeded random filters, ReLU, max pooling "
          "(fastconv);\n   then the global mean and max of every pooled map (NumPy)")
    print("    " + str(stack.summary(x_train.shape)).replace("\n", "\n    "))
    start = time.perf_counter()
    one = [features(stack[:3], x, ("2:pool1",), args.threads) for x in (x_train, x_test)]
    two = [features(stack, x, ("2:pool1", "5:pool2"), args.threads) for x in (x_train, x_test)]
    elapsed = time.perf_counter() - start
    print(f"    {len(x_train) + len(x_test)} images, twice -> feature vectors of "
          f"{one[0].shape[1]} (layer 1) and {two[0].shape[1]} (layers 1 + 2) numbers in "
          f"{elapsed * 1e3:.1f} ms")

    print(f"\n3. classifiers: test accuracy (chance is {100 / len(CLASSES):.0f}%)")
    raw = [x.reshape(len(x), -1) for x in (x_train, x_test)]
    print(f"    {'features':<32} {'nearest centroid':>17} {'least squares':>14}")
    accuracy = {}
    for name, (a, b) in [("raw pixels", raw), ("edge maps (layer 1)", one),
                         ("edge + random maps (layers 1+2)", two)]:
        row = []
        for model in (NearestCentroid(), LeastSquares()):
            row.append((model.fit(a, y_train).predict(b) == y_test).mean())
        accuracy[name] = row
        print(f"    {name:<32} {100 * row[0]:>16.1f}% {100 * row[1]:>13.1f}%")

    print("\n   confusion matrix of least squares on layers 1+2 (rows: true class):")
    print_confusion(confusion(y_test, LeastSquares().fit(*two[:1], y_train).predict(two[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
