"""The one image decoder: limits checked before decoding, formats by their bytes, and the transform
(mode, resize/crop/pad, normalisation) identical for every caller."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from services.preprocessing import InputCodec, InvalidImage
from services.preprocessing.images import decode_image, image_tensor, sniff, tensor_png
from services.projects.spec import ImageInput


def spec(**kw: object) -> ImageInput:
    base: dict[str, object] = {"kind": "image", "channels": 3, "height": 32, "width": 48}
    return ImageInput.model_validate({**base, **kw})


def encoded(img: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but carries (almost) no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt,name", [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_every_accepted_format_decodes_to_the_spec_shape(fmt: str, name: str) -> None:
    data = encoded(rgb(100, 60), fmt)
    assert sniff(data) == name
    tensor, got = image_tensor(data, spec())
    assert got == name and tensor.shape == (3, 32, 48) and tensor.dtype == np.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0


def test_a_format_outside_the_allow_list_is_refused_by_its_bytes_not_its_name() -> None:
    webp = encoded(rgb(20, 20), "WEBP")
    with pytest.raises(InvalidImage, match=r"not an accepted image format \(png, jpeg\): webp"):
        image_tensor(webp, spec(formats=["png", "jpeg"]))
    for other in (encoded(rgb(20, 20), "GIF"), encoded(rgb(20, 20), "BMP"), b"<svg/>", b"%PDF-1.4"):
        with pytest.raises(InvalidImage, match="not an accepted image format"):
            image_tensor(other, spec())


def test_size_and_pixel_limits_are_checked_before_any_pixel_is_decoded() -> None:
    with pytest.raises(InvalidImage, match="the limit is 1000"):
        image_tensor(encoded(rgb(200, 200), "PNG"), spec(max_bytes=1000))
    # A 100 000 × 100 000 header in a few dozen bytes: refused from the header, never allocated.
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 100
    with pytest.raises(InvalidImage, match="pixels; the limit is 40000000"):
        decode_image(bomb, spec())
    with pytest.raises(InvalidImage, match=r"= 40000000 pixels; the limit is 1000000"):
        decode_image(png_header_only(8000, 5000), spec(max_pixels=1_000_000))


def test_truncated_and_corrupt_images_are_refused_with_a_reason() -> None:
    data = encoded(rgb(64, 64), "JPEG")
    for broken in (data[: len(data) // 2], data[:20], b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b""):
        with pytest.raises(InvalidImage):
            image_tensor(broken, spec())


def test_modes_become_the_specs_channels() -> None:
    for mode in ("L", "LA", "P", "RGBA", "I;16", "CMYK", "1"):
        img = Image.new(mode, (10, 10))
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        grey, _ = image_tensor(encoded(img, fmt), spec(channels=1, height=4, width=4))
        colour, _ = image_tensor(encoded(img, fmt), spec(height=4, width=4))
        assert grey.shape == (1, 4, 4) and colour.shape == (3, 4, 4), mode


def test_resize_modes_keep_or_change_the_aspect_ratio_as_asked() -> None:
    # A 200×100 image: left half white, right half black.
    arr = np.zeros((100, 200), np.uint8)
    arr[:, :100] = 255
    data = encoded(Image.fromarray(arr), "PNG")
    base = {"channels": 1, "height": 10, "width": 10, "resample": "nearest"}
    stretch, _ = image_tensor(data, spec(**base, resize="stretch"))
    crop, _ = image_tensor(data, spec(**base, resize="crop"))
    pad, _ = image_tensor(data, spec(**base, resize="pad"))
    assert stretch[0, :, :5].min() == 1.0 and stretch[0, :, 5:].max() == 0.0
    assert crop[0].mean() == pytest.approx(0.5)  # the centre square of the two halves
    assert pad[0, :2].max() == 0.0 and pad[0, -2:].max() == 0.0  # black bands above and below
    assert pad[0, 4, :5].min() == 1.0


def test_normalisation_uses_the_specs_mean_and_std_per_channel() -> None:
    img = Image.new("RGB", (4, 4), (255, 0, 51))
    plain, _ = image_tensor(encoded(img, "PNG"), spec(height=4, width=4))
    norm, _ = image_tensor(encoded(img, "PNG"), spec(height=4, width=4, mean=[0.5, 0.5, 0.0], std=[0.5, 0.25, 0.2]))
    assert plain[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert norm[:, 0, 0].tolist() == pytest.approx([1.0, -2.0, 1.0])


def test_exif_orientation_is_applied() -> None:
    img = Image.new("L", (20, 10))
    img.paste(255, (0, 0, 10, 10))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = encoded(img, "JPEG", exif=exif.tobytes(), quality=100)
    tensor, _ = image_tensor(data, spec(channels=1, height=20, width=10, resample="nearest"))
    assert tensor[0, :8].mean() > 0.9 and tensor[0, 12:].mean() < 0.1  # the white half is now on top


def test_pixels_round_trip_through_the_png_they_make() -> None:
    s = spec(channels=3, height=5, width=7, layout="flat")
    values = np.random.default_rng(3).integers(0, 256, 3 * 5 * 7) / 255.0
    tensor, fmt = image_tensor(tensor_png(values, s), s)
    assert fmt == "png" and np.array_equal(tensor.reshape(-1), values.astype(np.float32))
    with pytest.raises(InvalidImage, match="within"):
        tensor_png(values * 2, s)


def test_large_images_carry_a_signature_small_ones_their_pixels() -> None:
    small = InputCodec(spec(channels=1, height=8, width=8, layout="flat"))
    big = InputCodec(spec(height=64, width=64))
    data = encoded(rgb(300, 200), "JPEG")
    e_small, e_big = small.encode_image(data), big.encode_image(data)
    assert e_small.features.shape == (64,) and np.array_equal(e_small.features, e_small.model_input)
    assert e_big.model_input.shape == (3, 64, 64) and e_big.features.shape == (len(big.schema().names),)
    assert big.schema().names[:2] == ("ch0_mean", "ch0_std") and big.schema().image_shape is None
    assert e_big.stored == data and e_big.content_type == "image/jpeg"
    np.testing.assert_allclose(e_big.features[0], e_big.model_input[0].mean(), rtol=1e-5)
