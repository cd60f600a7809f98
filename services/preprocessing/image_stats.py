"""Image statistics the monitor tests, computed from model inputs the same way everywhere.

* `derived_features`: statistics that move under real shifts while raw pixels barely do — mean
  intensity (inversion, brightness), bright-pixel share, high-frequency energy (noise, blur), the
  centre of mass (translation, rotation) and quadrant means — on the grey image, any size.
* `image_signature`: what a large image's prediction log and label carry instead of its pixels:
  per-channel mean and standard deviation, the derived statistics above, and a fixed
  16-dimensional embedding (a seeded random projection of a 4×4 thumbnail per channel).

Both work on pixel values in [0, 1]: a normalised model input is first mapped back.
"""

from __future__ import annotations

import numpy as np

from services.projects.spec import ImageInput

DERIVED_FEATURES: tuple[str, ...] = (
    "mean_intensity",
    "ink_fraction",
    "hf_energy",
    "com_row",
    "com_col",
    "q_top_left",
    "q_top_right",
    "q_bottom_left",
    "q_bottom_right",
)
EMBEDDING_DIM = 16
THUMB = 4
EMBEDDING_SEED = 20261130


def derived_features(pixels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(n, C·H·W) pixels in [0, 1] → (n, len(DERIVED_FEATURES)) statistics of the grey image."""
    c, h, w = shape
    x = np.asarray(pixels, dtype=np.float64).reshape(-1, c, h, w)
    x = x[:, 0] if c == 1 else x.mean(axis=1)
    n = x.shape[0]
    mean = x.mean(axis=(1, 2))
    ink = (x > 0.5).mean(axis=(1, 2))
    hf = (np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))) / 2
    total = x.sum(axis=(1, 2)) + 1e-9
    com_row = (x.sum(axis=2) * np.arange(h, dtype=np.float64)).sum(axis=1) / total
    com_col = (x.sum(axis=1) * np.arange(w, dtype=np.float64)).sum(axis=1) / total
    hh, hw = max(h // 2, 1), max(w // 2, 1)
    quads = [x[:, :hh, :hw], x[:, :hh, hw:], x[:, hh:, :hw], x[:, hh:, hw:]]
    cols = [mean, ink, hf, com_row, com_col, *[q.mean(axis=(1, 2)) if q.size else np.zeros(n) for q in quads]]
    return np.stack(cols, axis=1).reshape(n, len(DERIVED_FEATURES))


def pixels_of(model_input: np.ndarray, spec: ImageInput) -> np.ndarray:
    """Model inputs (n, …) → pixel values in [0, 1] as (n, C, H, W), undoing the spec's normalisation."""
    x = np.asarray(model_input, dtype=np.float32).reshape(-1, spec.channels, spec.height, spec.width)
    if spec.mean is not None and spec.std is not None and not spec.plain_scale:
        x = x * np.asarray(spec.std, dtype=np.float32)[:, None, None] + np.asarray(spec.mean, np.float32)[:, None, None]
    return x


def signature_names(spec: ImageInput) -> list[str]:
    per_channel = [f"ch{c}_{stat}" for c in range(spec.channels) for stat in ("mean", "std")]
    return [*per_channel, *DERIVED_FEATURES, *(f"emb{i}" for i in range(EMBEDDING_DIM))]


def _projection(channels: int) -> np.ndarray:
    rng = np.random.default_rng(EMBEDDING_SEED + channels)
    return rng.normal(0.0, 1.0 / np.sqrt(channels * THUMB * THUMB), (channels * THUMB * THUMB, EMBEDDING_DIM))


def _thumbnail(x: np.ndarray) -> np.ndarray:
    """(n, C, H, W) → (n, C·4·4) block means (blocks as even as the size allows)."""
    n, c, h, w = x.shape
    rows = np.array_split(np.arange(h), THUMB) if h >= THUMB else [np.arange(h)] * THUMB
    cols = np.array_split(np.arange(w), THUMB) if w >= THUMB else [np.arange(w)] * THUMB
    out = np.empty((n, c, THUMB, THUMB), dtype=np.float64)
    for i, r in enumerate(rows):
        band = x[:, :, r, :].mean(axis=2)
        for j, col in enumerate(cols):
            out[:, :, i, j] = band[:, :, col].mean(axis=2)
    return out.reshape(n, -1)


def image_signature(model_input: np.ndarray, spec: ImageInput) -> np.ndarray:
    """(n, …) model inputs → (n, len(signature_names(spec))) float32 signatures."""
    x = pixels_of(model_input, spec).astype(np.float64)
    n = x.shape[0]
    stats = np.stack([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=2).reshape(n, -1)
    derived = derived_features(x.reshape(n, -1), (spec.channels, spec.height, spec.width))
    emb = _thumbnail(x) @ _projection(spec.channels)
    return np.concatenate([stats, derived, emb], axis=1).astype(np.float32)
