"""Write this example's data folder: colour images of shapes, drawn here (nothing downloaded).

    python examples/shapes/make_data.py [OUT_DIR] [N]      (default: examples/shapes/data, 2000 images)

Each image is 64-128 pixels a side (not square), a noisy colour gradient background and one filled
shape — circle, square, triangle or star — of a random colour, size, position and rotation. Half
are light shapes on dark backgrounds, half dark on light: with random colours for both, a shape
often vanished into its background, and a small CNN trained on ~1000 images only learned the
colours (validation accuracy at chance); with this contrast it reaches ~0.8 on 700.
Most are JPEG, some PNG and some WebP. `data/labels.csv` lists `example_id,label,image`.
Seeded: the same N gives the same files.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        corners = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if kind == "triangle":
        return [
            (cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
            for k in range(3)
        ]
    points = []
    for k in range(10):  # a five-pointed star: outer and inner radius alternating
        a = angle + k * math.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        points.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return points


def draw(kind: str, rng: np.random.Generator) -> Image.Image:
    w, h = int(rng.integers(64, 129)), int(rng.integers(64, 129))
    dark = rng.random() < 0.5
    top = rng.integers(0, 100, 3) if dark else rng.integers(155, 256, 3)
    bottom = np.clip(top + rng.integers(-50, 51, 3), 0, 255)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    background = (1 - t) * top + t * bottom + rng.normal(0, 10, (h, w, 3))
    img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    colour = tuple(int(c) for c in (rng.integers(155, 256, 3) if dark else rng.integers(0, 100, 3)))
    r = float(rng.uniform(0.28, 0.42) * min(w, h))
    cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
    pen = ImageDraw.Draw(img)
    if kind == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        pen.polygon(_polygon(kind, cx, cy, r, float(rng.uniform(0, 2 * math.pi))), fill=colour)
    return img


def main(out: Path, n: int = 2000) -> Path:
    rng = np.random.default_rng(20261130)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        kind = SHAPES[i % len(SHAPES)]
        img = draw(kind, rng)
        fmt = "png" if i % 10 == 3 else "webp" if i % 10 == 7 else "jpeg"
        name = f"{kind}-{i:05d}.{'jpg' if fmt == 'jpeg' else fmt}"
        img.save(images / name, format=fmt.upper(), **({"quality": 90} if fmt != "png" else {}))
        rows.append({"example_id": f"shapes-{i:05d}", "label": kind, "image": f"images/{name}"})
    path = out / "labels.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["example_id", "label", "image"])
        writer.writeheader()
        writer.writerows(rows)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    print(main(out, int(sys.argv[2]) if len(sys.argv) > 2 else 2000))
