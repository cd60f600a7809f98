"""The one bounded image decoder (services/preprocessing/images.py), called directly: every hostile
image is refused from its header, before a pixel is decoded, with a message naming the limit."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.preprocessing import InvalidImage, PixelBudget
from services.preprocessing.digits import DIGITS_INPUT, png_to_features
from services.preprocessing.images import HARD_MAX_PIXELS, decode_image, image_tensor
from services.projects.spec import ImageInput
from tests.security import images


def spec(**kw: object) -> ImageInput:
    base: dict[str, object] = {"kind": "image", "channels": 1, "height": 8, "width": 8}
    return ImageInput.model_validate({**base, "max_bytes": 1 << 16, "max_pixels": 256 * 256, **kw})


SMALL = spec()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (images.png_bomb(), "13000×13000"),
        (images.png_bomb(300, 300), "300×300"),
        (images.jpeg_declaring(60000, 60000), "pixels"),
        (images.png_header_only(2000, 2000), "2000×2000"),
    ],
    ids=["png-13000-1bit", "png-over-limit", "jpeg-60000", "png-header-lies"],
)
def test_images_that_declare_too_many_pixels_are_refused_from_the_header(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage, match=reason):
        decode_image(data, SMALL)


@pytest.mark.parametrize(
    "data",
    [
        images.gif_bomb(),
        images.bmp_declaring(100000, 100000),
        images.tiff(),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ],
    ids=["gif-65535", "bmp-100000", "tiff", "svg"],
)
def test_formats_outside_the_allow_list_are_never_decoded(data: bytes) -> None:
    with pytest.raises(InvalidImage, match="not an accepted image format"):
        decode_image(data, SMALL)


def test_a_project_narrows_the_formats() -> None:
    with pytest.raises(InvalidImage, match=r"not an accepted image format \(jpeg\): png"):
        decode_image(images.png(), spec(formats=["jpeg"]))


def test_broken_empty_and_oversized_bytes_are_invalid_images() -> None:
    with pytest.raises(InvalidImage, match="not a decodable png"):
        decode_image(images.truncated_png(), SMALL)
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"", SMALL)
    with pytest.raises(InvalidImage, match="bytes; the limit is 64"):
        decode_image(images.png(), spec(max_bytes=64))
    with pytest.raises(InvalidImage, match="not a decodable png"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\xff" * 64, SMALL)


def test_a_budget_bounds_the_pixels_of_several_images_together() -> None:
    budget = PixelBudget(3 * 64 * 64)
    for _ in range(3):
        image_tensor(images.png(64, 64), SMALL, budget)
    with pytest.raises(InvalidImage, match="in all"):
        image_tensor(images.png(64, 64), SMALL, budget)


def test_good_images_decode_in_every_allowed_format() -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        buf = io.BytesIO()
        Image.new("RGB", (20, 10), (200, 100, 50)).save(buf, format=fmt)
        tensor, got = image_tensor(buf.getvalue(), SMALL)
        assert tensor.shape == (1, 8, 8) and got == fmt.lower(), fmt


def test_pillows_guard_stays_a_second_line() -> None:
    assert Image.MAX_IMAGE_PIXELS == HARD_MAX_PIXELS
    with pytest.raises(ValueError, match="max_pixels"):
        spec(max_pixels=HARD_MAX_PIXELS + 1)


def test_digit_features_go_through_the_bounded_decoder() -> None:
    assert DIGITS_INPUT.max_pixels <= 1 << 20
    assert png_to_features(images.png(32, 32)).shape == (64,)
    with pytest.raises(InvalidImage, match="13000×13000"):
        png_to_features(images.png_bomb())
