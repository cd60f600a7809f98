"""The one way Flywheel decodes an image it was sent: bounded before a pixel is decoded.

Every image from outside (a label's PNG at ingest, a `:predict` instance at the gateway, a
project's image input) comes through `decode_image`, because an image's cost is not its size in
bytes: a 20 KB 1-bit PNG can declare 13000×13000 pixels, which Pillow would inflate to hundreds of
megabytes and seconds of CPU. The checks, in order, each before any work the next one costs:

1. the byte size against `limits.max_bytes`;
2. the format, from the first bytes, against `limits.formats` (an allow-list: Pillow is never
   asked to try its other plugins, some of which parse formats nobody here needs);
3. the width, height and pixel count the header declares (Pillow's `Image.open` reads only the
   header) against `limits`, and against a caller's `PixelBudget` when several images share one
   (a request's instances);
4. then the decode of the first frame only, with Pillow's own `MAX_IMAGE_PIXELS` guard still on
   as a second line (a limit above it is refused when the limits are made).

Anything wrong is an `InvalidImage` whose message says what and by how much; nothing else
escapes. Interface: bytes + limits → a PIL image (`decode_image`) or a numpy array (`decode_array`).
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Magic numbers of the formats this module will hand to Pillow, by Pillow's format name.
_SIGNATURES: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("PNG", (b"\x89PNG\r\n\x1a\n",)),
    ("JPEG", (b"\xff\xd8\xff",)),
    ("GIF", (b"GIF87a", b"GIF89a")),
    ("BMP", (b"BM",)),
)
DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


class InvalidImage(ValueError):
    """The bytes are not an image this service accepts; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost. The defaults fit a photo; a caller with small inputs passes tighter ones."""

    max_bytes: int = 8 << 20
    max_width: int = 8192
    max_height: int = 8192
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = DEFAULT_FORMATS

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_width, self.max_height, self.max_pixels) < 1:
            raise ValueError("image limits must be positive")
        if self.max_pixels > Image.MAX_IMAGE_PIXELS:
            raise ValueError(
                f"max_pixels {self.max_pixels} is above Pillow's MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS}), "
                "which must stay the second line of defence"
            )
        unknown = set(self.formats) - set(DEFAULT_FORMATS)
        if unknown:
            raise ValueError(f"unsupported image formats {sorted(unknown)}; choose from {', '.join(DEFAULT_FORMATS)}")


class PixelBudget:
    """Pixels several images may decode together (one request's instances): taken from each header."""

    def __init__(self, pixels: int) -> None:
        self.left = pixels
        self._lock = threading.Lock()

    def take(self, pixels: int) -> None:
        with self._lock:
            if pixels > self.left:
                raise InvalidImage(f"the images of this request declare more than {self.left + pixels} pixels in all")
            self.left -= pixels


def sniff_format(data: bytes) -> str | None:
    """The format the first bytes announce (Pillow's name), or None when none of ours."""
    for name, magics in _SIGNATURES:
        if data.startswith(magics):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, limits: ImageLimits, budget: PixelBudget | None = None) -> Image.Image:
    """The first frame of `data`, decoded, or InvalidImage. The image is loaded: no file handle stays open."""
    if not data:
        raise InvalidImage("empty image")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    fmt = sniff_format(data)
    if fmt is None or fmt not in limits.formats:
        what = f"image format {fmt} is not accepted" if fmt else "not a decodable image: unknown format"
        raise InvalidImage(f"{what}; send one of {', '.join(limits.formats)}")
    try:
        # A decoder fed hostile bytes fails in many ways (OSError, SyntaxError, struct.error, ValueError,
        # EOFError, DecompressionBombError, …): each means these bytes are no acceptable image.
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except Exception as exc:  # noqa: BLE001 - see above; the reason goes into the message
        raise InvalidImage(f"not a decodable {fmt} image: {_reason(exc)}") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise InvalidImage(f"image declares {width}×{height} pixels")
    if width > limits.max_width or height > limits.max_height or width * height > limits.max_pixels:
        raise InvalidImage(
            f"image declares {width}×{height} pixels; the limit is {limits.max_width}×{limits.max_height} "
            f"and {limits.max_pixels} pixels"
        )
    if budget is not None:
        budget.take(width * height)
    try:
        img.load()  # the current (first) frame only
    except Exception as exc:  # noqa: BLE001 - as above: a failed decode of caller bytes is an invalid image
        raise InvalidImage(f"not a decodable {fmt} image: {_reason(exc)}") from None
    return img


def decode_array(data: bytes, limits: ImageLimits, mode: str = "L", budget: PixelBudget | None = None) -> np.ndarray:
    """`decode_image` converted to `mode` ("L" grey, "RGB", …) as a uint8 array (height, width[, bands])."""
    img = decode_image(data, limits, budget)
    try:
        converted = img.convert(mode)
    except (ValueError, OSError) as exc:
        raise InvalidImage(f"cannot convert a {img.mode} image to {mode}: {_reason(exc)}") from None
    return np.asarray(converted)


def _reason(exc: Exception) -> str:
    text = str(exc).split(" at 0x")[0]  # Pillow names the BytesIO object: no use to a caller
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
