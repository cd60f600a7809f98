"""Write this example's data folder: `data/labels.csv`, one row per digit of scikit-learn's dataset.

    python examples/strokes/make_data.py [OUT_DIR]        (default: examples/strokes/data)

Each row holds the columns project.yaml declares, plus `example_id` and `label`. Everything is
computed from the 8×8 images (shipped with scikit-learn, nothing downloaded); `slant` is left
empty for about 5% of rows, chosen by a hash of the example id, to show how nulls flow.
"""

from __future__ import annotations

import csv
import sys
import zlib
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits

INK = 6  # of 16 levels: a pixel is ink above this


def strokes(image: np.ndarray) -> dict[str, object]:
    ink = image > INK
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    _background, regions = ndimage.label(np.pad(~ink, 1, constant_values=True))
    holes = regions - 1  # background regions not connected to the border
    ys, xs = np.nonzero(ink)
    slant = float(np.corrcoef(ys, xs)[0, 1]) if len(ys) > 2 and ys.std() > 0 and xs.std() > 0 else None
    row: dict[str, object] = {f"row{i}_ink": int(v) for i, v in enumerate(ink.sum(axis=1))}
    row |= {f"col{i}_ink": int(v) for i, v in enumerate(ink.sum(axis=0))}
    row |= {
        "height": int(rows.max() - rows.min() + 1) if len(rows) else 1,
        "width": int(cols.max() - cols.min() + 1) if len(cols) else 1,
        "holes": ["none", "one", "two_or_more"][min(holes, 2)],
        "slant": round(slant, 4) if slant is not None else None,
    }
    return row


def main(out: Path) -> Path:
    digits = load_digits()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "labels.csv"
    rows = []
    for i, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        example_id = f"strokes-{i:05d}"
        row = strokes(image)
        if zlib.crc32(example_id.encode()) % 20 == 0:
            row["slant"] = None
        rows.append({"example_id": example_id, "label": str(int(target)), **row})
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"))
