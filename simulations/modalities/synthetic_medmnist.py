"""A harder synthetic image task in the MedMNIST .npz layout ("lesions"), to check that an
imaging preset learns beyond BreastMNIST and does not collapse to one class.

Each 28x28 grayscale image is ultrasound-like speckle (smoothed gamma noise, a random
brightness and contrast) with one lesion-like shape at a random position; the class is
the shape, not its place or brightness, so a linear model on the pixels stays near the
majority rate while a CNN can learn it:
  0 no lesion (the majority), 1 a filled disc, 2 a ring (a hollow disc), 3 an elongated
  ellipse at a random angle.
Shapes have random size and a contrast of 0.5-1.1 times the speckle's std, either
brighter or darker than the background; classes are imbalanced (``priors``).

    python simulations/modalities/synthetic_medmnist.py /tmp/lesions.npz
    fedmedsec run configs/breastmnist.toml -s data.path=/tmp/lesions.npz ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

PRIORS = (0.55, 0.2, 0.15, 0.1)


def _image(c: int, size: int, rng: np.random.Generator) -> np.ndarray:
    speckle = ndimage.gaussian_filter(rng.gamma(2.0, 1.0, (size, size)), rng.uniform(0.6, 1.2))
    speckle = (speckle - speckle.mean()) / speckle.std()
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    shape = np.zeros((size, size))
    if c > 0:
        r = rng.uniform(3.0, 5.5)
        cy, cx = rng.uniform(r + 2, size - r - 2, 2)
        dy, dx = yy - cy, xx - cx
        if c == 1:
            shape = (dy**2 + dx**2 <= r**2).astype(float)
        elif c == 2:
            d = np.sqrt(dy**2 + dx**2)
            shape = ((d <= r + 0.5) & (d >= r - 1.5)).astype(float)
        else:
            a = rng.uniform(0, np.pi)
            u, v = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
            shape = ((u / (1.6 * r)) ** 2 + (v / (0.45 * r)) ** 2 <= 1).astype(float)
        shape = ndimage.gaussian_filter(shape, 0.5)
    sign = rng.choice([-1.0, 1.0])
    img = speckle + sign * rng.uniform(0.5, 1.1) * 2.0 * shape
    img = rng.uniform(0.35, 0.65) + rng.uniform(0.08, 0.14) * img
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def make_lesions_npz(
    path: Path | str, n: tuple[int, int, int] = (800, 100, 300), size: int = 28,
    priors: tuple[float, ...] = PRIORS, seed: int = 0,
) -> Path:
    """Write {train,val,test}_images uint8 (N, size, size) and _labels uint8 (N, 1) to
    ``path``; labels drawn from ``priors`` (4 classes). Same arguments, same file."""
    if len(priors) != 4 or abs(sum(priors) - 1) > 1e-9:
        raise ValueError(f"priors = {priors}: need 4 class probabilities summing to 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1E5]))
    arrays = {}
    for split, m in zip(("train", "val", "test"), n):
        y = rng.choice(4, size=m, p=list(priors))
        arrays[f"{split}_images"] = np.stack([_image(int(c), size, rng) for c in y])
        arrays[f"{split}_labels"] = y[:, None].astype(np.uint8)
    path = Path(path)
    np.savez(path, **arrays)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--n", type=int, nargs=3, default=[800, 100, 300], metavar=("TRAIN", "VAL", "TEST"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make_lesions_npz(args.path, tuple(args.n), seed=args.seed))


if __name__ == "__main__":
    main()
