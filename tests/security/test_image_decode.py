"""The one bounded image decoder (services/preprocessing/image_decode.py), called directly: every hostile
image is refused from its header, before a pixel is decoded, with a message naming the limit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.preprocessing import ImageLimits, InvalidImage, PixelBudget, decode_array, decode_image
from services.preprocessing.digits import DIGIT_IMAGE_LIMITS, png_to_features
from tests.security import images

SMALL = ImageLimits(max_bytes=1 << 16, max_width=256, max_height=256, max_pixels=256 * 256)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (images.png_bomb(), "13000×13000"),
        (images.png_bomb(300, 300), "300×300"),
        (images.gif_bomb(), "pixels"),
        (images.jpeg_declaring(60000, 60000), "pixels"),
        (images.bmp_declaring(100000, 100000), "pixels"),
        (images.png_header_only(2000, 2000), "2000×2000"),
    ],
    ids=["png-13000-1bit", "png-over-limit", "gif-65535", "jpeg-60000", "bmp-100000", "png-header-lies"],
)
def test_images_that_declare_too_many_pixels_are_refused_from_the_header(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage, match=reason):
        decode_image(data, SMALL)


def test_formats_outside_the_allow_list_are_never_decoded() -> None:
    with pytest.raises(InvalidImage, match="send one of"):
        decode_image(images.tiff(), SMALL)
    with pytest.raises(InvalidImage, match="PNG is not accepted; send one of JPEG"):
        decode_image(images.png(), ImageLimits(formats=("JPEG",)))
    with pytest.raises(InvalidImage, match="unknown format"):
        decode_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>", SMALL)


def test_broken_empty_and_oversized_bytes_are_invalid_images() -> None:
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(images.truncated_png(), SMALL)
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"", SMALL)
    with pytest.raises(InvalidImage, match="bytes; the limit is 50"):
        decode_image(images.png(), ImageLimits(max_bytes=50))
    with pytest.raises(InvalidImage, match="not a decodable PNG"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\xff" * 64, SMALL)


def test_a_budget_bounds_the_pixels_of_several_images_together() -> None:
    budget = PixelBudget(3 * 64 * 64)
    for _ in range(3):
        decode_image(images.png(64, 64), SMALL, budget)
    with pytest.raises(InvalidImage, match="in all"):
        decode_image(images.png(64, 64), SMALL, budget)


def test_good_images_decode_in_every_allowed_format() -> None:
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP"):
        buf = io.BytesIO()
        Image.new("RGB", (20, 10), (200, 100, 50)).save(buf, format=fmt)
        grey = decode_array(buf.getvalue(), SMALL, "L")
        assert grey.shape == (10, 20) and grey.dtype == np.uint8, fmt


def test_limits_keep_pillows_guard_as_a_second_line() -> None:
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        ImageLimits(max_pixels=Image.MAX_IMAGE_PIXELS + 1)
    with pytest.raises(ValueError, match="unsupported image formats"):
        ImageLimits(formats=("TIFF",))


def test_digit_features_go_through_the_bounded_decoder() -> None:
    assert DIGIT_IMAGE_LIMITS.max_pixels <= 1 << 20
    assert png_to_features(images.png(32, 32)).shape == (64,)
    with pytest.raises(InvalidImage, match="13000×13000"):
        png_to_features(images.png_bomb())
