"""The one image decoder, and the one image → model-input transform, for every service.

Ingest (labels), the trainer (training inputs re-read from the stored originals) and the gateway
(`:predict`) all call `image_tensor`, so a model sees at serving time exactly what it saw in
training. Decoding is bounded before any pixel is decoded:

1. the byte size against `max_bytes`;
2. the format, sniffed from the leading bytes, against the allow-list (PNG, JPEG, WebP);
3. the dimensions from the header against `max_pixels` and a per-side limit;
4. then Pillow decodes, with its decompression-bomb guard set to our hard ceiling (a second
   line of defence should a header lie), truncated files refused.

Then: EXIF orientation applied, converted to grey (`L`) or `RGB` (alpha dropped), resized
(`stretch` | `crop`: shorter side, centre crop | `pad`: fit inside, black borders), scaled to
[0, 1], normalised per channel with the spec's mean and std, returned as float32 C×H×W.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.preprocessing.errors import InvalidImage
from services.preprocessing.grey_png import grey_png_pixels
from services.projects.spec import ImageInput

# Pillow refuses to decode above this many pixels whatever a spec allows (its bomb guard, which it
# reads as a module setting: set here, where the one decoder lives).
HARD_MAX_PIXELS = 200_000_000
MAX_SIDE = 65_535
Image.MAX_IMAGE_PIXELS = HARD_MAX_PIXELS

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class PixelBudget:
    """Pixels several images may decode together (one request's instances), taken from each header
    before its decode: a request of many small-looking images cannot add up to a bomb."""

    def __init__(self, pixels: int) -> None:
        self.left = pixels
        self._lock = threading.Lock()

    def take(self, pixels: int) -> None:
        with self._lock:
            if pixels > self.left:
                raise InvalidImage(
                    f"the images of this request declare more than {self.left + pixels} pixels in all; "
                    "send fewer or smaller images per request"
                )
            self.left -= pixels


def sniff(data: bytes) -> str | None:
    """The format named by the leading bytes: png, jpeg, webp, or None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_image(data: bytes, spec: ImageInput, budget: PixelBudget | None = None) -> tuple[Image.Image, str]:
    """Bytes → a loaded Pillow image and its format, or InvalidImage saying why not. `budget`: the
    pixels left to the request this image belongs to."""
    if not data:
        raise InvalidImage("empty image")
    if len(data) > spec.max_bytes:
        raise InvalidImage(f"image is {len(data)} bytes; the limit is {spec.max_bytes}")
    fmt = sniff(data)
    if fmt is None or fmt not in spec.formats:
        accepted = ", ".join(spec.formats)
        raise InvalidImage(f"not an accepted image format ({accepted}): {'unknown bytes' if fmt is None else fmt}")
    try:
        img = Image.open(io.BytesIO(data), formats=[PIL_FORMATS[fmt]])
    except Image.DecompressionBombError:
        raise InvalidImage(
            f"image header claims more than {HARD_MAX_PIXELS} pixels; the limit is {spec.max_pixels}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"not a decodable {fmt} image: {exc}") from None
    try:
        width, height = img.size
        if width < 1 or height < 1 or width > MAX_SIDE or height > MAX_SIDE:
            raise InvalidImage(f"image is {width}×{height}; each side must be 1..{MAX_SIDE}")
        if width * height > spec.max_pixels:
            raise InvalidImage(f"image is {width}×{height} = {width * height} pixels; the limit is {spec.max_pixels}")
        if budget is not None:
            budget.take(width * height)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except InvalidImage:
        img.close()
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, Warning) as exc:
        img.close()
        raise InvalidImage(f"not a decodable {fmt} image: {exc}") from None
    return img, fmt


def _resized(img: Image.Image, spec: ImageInput) -> Image.Image:
    target = (spec.width, spec.height)
    if img.size == target:
        return img
    resample = RESAMPLE[spec.resample]
    if spec.resize == "stretch":
        return img.resize(target, resample)
    w, h = img.size
    if spec.resize == "crop":
        scale = max(spec.width / w, spec.height / h)
        size = (max(spec.width, round(w * scale)), max(spec.height, round(h * scale)))
        scaled = img.resize(size, resample)
        left, top = (size[0] - spec.width) // 2, (size[1] - spec.height) // 2
        return scaled.crop((left, top, left + spec.width, top + spec.height))
    scale = min(spec.width / w, spec.height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    canvas = Image.new(img.mode, target)
    canvas.paste(img.resize(size, resample), ((spec.width - size[0]) // 2, (spec.height - size[1]) // 2))
    return canvas


def _normalised(pixels: np.ndarray, spec: ImageInput) -> np.ndarray:
    """uint8 H×W or H×W×C → float32 C×H×W in [0, 1], then (x - mean) / std per channel."""
    x = pixels.astype(np.float32) / 255.0
    x = x[None, :, :] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))
    if spec.mean is not None and spec.std is not None and not spec.plain_scale:
        mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
        x = (x - mean) / std
    return x


def image_tensor(data: bytes, spec: ImageInput, budget: PixelBudget | None = None) -> tuple[np.ndarray, str]:
    """Encoded image → (float32 C×H×W model input, format). The only way an image becomes a tensor."""
    if spec.channels == 1 and len(data) <= spec.max_bytes and "png" in spec.formats:
        pixels = grey_png_pixels(data, spec.width, spec.height)
        if pixels is not None:
            if budget is not None:
                budget.take(spec.width * spec.height)
            grey = np.frombuffer(pixels, dtype=np.uint8).reshape(spec.height, spec.width)
            return _normalised(grey, spec), "png"
    img, fmt = decode_image(data, spec, budget)
    try:
        oriented = ImageOps.exif_transpose(img)
        converted = oriented.convert("L" if spec.channels == 1 else "RGB")
        return _normalised(np.asarray(_resized(converted, spec)), spec), fmt
    except (OSError, ValueError) as exc:
        raise InvalidImage(f"cannot convert the {fmt} image: {exc}") from None
    finally:
        img.close()


def tensor_png(tensor: np.ndarray, spec: ImageInput) -> bytes:
    """A plain-scale model input (values in [0, 1]) → the PNG it decodes back from (grey or RGB)."""
    if not spec.plain_scale:
        raise InvalidImage("this project normalises its images: send an image, not model-input values")
    arr = np.asarray(tensor, dtype=np.float32).reshape(spec.channels, spec.height, spec.width)
    if not np.isfinite(arr).all():
        raise InvalidImage("values contain NaN or infinity")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise InvalidImage("values must be within [0, 1]")
    pixels = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels[0], mode="L") if spec.channels == 1 else Image.fromarray(pixels.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
