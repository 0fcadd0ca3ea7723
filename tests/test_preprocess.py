"""Preprocessing, step by step and end to end: any image -> a 28x28 MNIST-style digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from digit_images import png_header_only, render_like_a_person
from PIL import Image

from tinymnist import preprocess as P
from tinymnist.data import read_split
from tinymnist.errors import TinyMnistError


@pytest.fixture(scope="module")
def test_digits(mnist_dir) -> tuple[torch.Tensor, torch.Tensor]:
    split = read_split(mnist_dir, "test")
    return split.images[:200], split.labels[:200]


def drawing(size=(120, 90)) -> np.ndarray:
    """Dark ink on white: a thick 'L' shape, as uint8 grey."""
    a = np.full(size[::-1], 255, np.uint8)
    a[20:70, 40:52] = 0
    a[58:70, 40:80] = 0
    return a


# ------------------------------------------------------------------------------------------------- to_grey
def test_grey_keeps_levels_and_weights_colour():
    assert P.to_grey(Image.new("L", (3, 3), 128))[0, 0] == pytest.approx(128 / 255)
    assert P.to_grey(Image.new("RGB", (3, 3), (255, 0, 0)))[0, 0] == pytest.approx(0.299, abs=1e-3)
    one_bit = Image.new("1", (3, 3), 1)
    assert P.to_grey(one_bit)[0, 0] == 1.0


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_flattened_onto_white(mode):
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black: paper
    img.putpixel((1, 0), (0, 0, 0, 255))  # opaque black: ink
    img.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black: grey
    grey = P.to_grey(img.convert(mode))
    assert grey[0, 0] == pytest.approx(1.0) and grey[0, 1] == pytest.approx(0.0)
    assert grey[0, 2] == pytest.approx(0.5, abs=0.01)


def test_palette_transparency_is_flattened_onto_white():
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 200, 200, 200])
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0  # palette entry 0 (black) is transparent
    assert P.to_grey(img)[0].tolist() == pytest.approx([1.0, 200 / 255], abs=1e-3)


def test_sixteen_bit_keeps_its_range():
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(a)
    assert img.mode.startswith("I;16")
    assert P.to_grey(img)[0].tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-3)  # Pillow's "L" would clip


def test_one_colour_drawing_on_transparent_canvas_uses_alpha():
    a = np.zeros((40, 40, 4), np.uint8)
    a[..., :3] = 255  # white everywhere; only the alpha draws
    a[10:30, 18:22, 3] = 255
    grey = P.to_grey(Image.fromarray(a))
    assert grey[20, 20] == 0.0 and grey[0, 0] == 1.0  # the stroke became dark ink on white


def test_large_images_are_shrunk():
    assert P.to_grey(Image.new("RGB", (400, 300), "white"), max_side=100).shape == (75, 100)


# ------------------------------------------------------------------------------------------- polarity, ink
def test_dark_on_light_is_inverted_and_mnist_is_not(test_digits):
    grey = drawing().astype(np.float32) / 255
    inverted, flipped = P.to_light_on_dark(grey)
    assert flipped and inverted[30, 45] == 1.0 and inverted[0, 0] == 0.0
    mnist = test_digits[0][0].numpy().astype(np.float32) / 255
    same, flipped = P.to_light_on_dark(mnist)
    assert not flipped and same is mnist


def test_background_removed_and_ink_stretched():
    x = np.full((50, 50), 0.2, np.float32)  # grey paper (after inversion)
    x[20:30, 20:30] = 0.7  # pale pencil
    y = P.remove_background(x)
    assert y[0, 0] == 0.0 and y[25, 25] == pytest.approx(1.0)


def test_unevenly_lit_paper_is_removed():
    h, w = 300, 400
    light = np.linspace(0.95, 0.65, w)[None, :] * np.linspace(1.0, 0.9, h)[:, None]  # darker to the right
    x = (1.0 - light).astype(np.float32)  # inverted: the shading is now a bright ramp, the paper is not black
    x[100:200, 150:160] = 0.9  # a stroke
    y = P.remove_background(x)
    paper = np.ones_like(y, dtype=bool)
    paper[95:205, 145:165] = False
    assert y[paper].max() < P.INK_LEVEL and y[150, 155] > 0.8
    assert P.ink_box(y) == (100, 150, 200, 160)


@pytest.mark.parametrize("contrast", [0.0, 0.05])
def test_no_ink_is_an_error(contrast):
    x = np.zeros((40, 40), np.float32)
    x[10, 10] = contrast
    with pytest.raises(TinyMnistError, match="no ink"):
        P.remove_background(x)
    with pytest.raises(TinyMnistError, match="no ink"):
        P.ink_box(np.zeros((5, 5), np.float32))


def test_ink_box():
    x = np.zeros((40, 60), np.float32)
    x[5:12, 30:41] = 1.0
    x[3, 3] = 0.1  # below the ink level: ignored
    assert P.ink_box(x) == (5, 30, 12, 41)


# -------------------------------------------------------------------------------------- stroke, size, centre
def test_stroke_width_estimate():
    x = np.zeros((200, 200), np.float32)
    x[50:150, 96:104] = 1.0  # an 8-px wide bar
    assert P.stroke_width(x) == pytest.approx(8, rel=0.15)


def test_thin_strokes_are_thickened_to_mnist_width():
    x = np.zeros((400, 300), np.float32)
    x[:, 148:151] = 1.0  # a 3-px line, 400 px tall: 0.15 px once the digit is 20 px tall
    x[0:3, :] = 1.0
    thick = P.thicken_thin_strokes(x)
    relative = P.stroke_width(thick) / max(thick.shape)
    assert relative == pytest.approx(P.STROKE_FRACTION, rel=0.3)
    assert thick.max() == pytest.approx(1.0)


def test_mnist_like_strokes_are_left_alone(test_digits):
    for digit in test_digits[0][:20]:
        x = digit.numpy().astype(np.float32) / 255
        crop = P.crop_to_ink(x, P.ink_box(x))
        assert P.thicken_thin_strokes(crop) is crop or P.stroke_width(crop) < 1.5  # only MNIST's very thinnest


@pytest.mark.parametrize("shape,expected", [((100, 50), (20, 10)), ((30, 90), (7, 20)), ((5, 3), (20, 12))])
def test_fit_box_keeps_aspect(shape, expected):
    out = P.fit_box(np.ones(shape, np.float32))
    assert out.shape == expected and out.max() <= 1.0


def test_centre_by_mass_lands_on_the_middle():
    patch = np.zeros((20, 12), np.float32)
    patch[:, :4] = 1.0  # all the mass on the left
    out = P.centre_by_mass(patch)
    cy, cx = P.centre_of_mass(out)
    assert out.shape == (28, 28) and out.sum() == patch.sum()  # nothing cut off
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_lopsided_patch_stays_inside():
    patch = np.zeros((20, 20), np.float32)
    patch[0, 0] = 1.0
    out = P.centre_by_mass(patch)
    assert out.sum() == 1.0


# --------------------------------------------------------------------------------------------- end to end
def test_fashion_layout_fills_the_field_and_centres_the_box():
    a = np.full((300, 400), 255, np.uint8)
    a[50:110, 20:140] = 30  # a dark, wide, filled "bag" in the top-left corner of a white photo
    a[60:70, 30:130] = 200  # with a light band (not a stroke to thicken)
    out = P.mnist_style(Image.fromarray(a), dataset="fashion-mnist").numpy()
    assert P.ink_box(out.astype(np.float32) / 255) == (7, 0, 21, 28)  # 120x60 -> 28x14, centred
    digit = P.mnist_style(Image.fromarray(a), dataset="mnist").numpy()
    top, left, bottom, right = P.ink_box(digit.astype(np.float32) / 255)
    assert max(bottom - top, right - left) == 20


def test_mnist_digit_passes_through_nearly_unchanged(tmp_path, test_digits):
    for i in range(10):
        Image.fromarray(test_digits[0][i].numpy()).save(tmp_path / f"{i}.png")
        out = P.load_digit(tmp_path / f"{i}.png")
        assert out.dtype == torch.uint8 and out.shape == (28, 28)
        # already MNIST-style: cropping, 20-px scaling and centring change little
        assert (out.float() - test_digits[0][i].float()).abs().mean() < 8


def test_a_persons_rendering_comes_back_to_mnist(tmp_path, test_digits):
    rng = np.random.default_rng(0)
    for i in range(10):
        original = test_digits[0][i].numpy()
        render_like_a_person(original, rng).save(tmp_path / f"{i}.jpg", quality=85)
        out = P.load_digit(tmp_path / f"{i}.jpg").numpy().astype(np.float64)
        corr = np.corrcoef(out.ravel(), original.astype(np.float64).ravel())[0, 1]
        assert corr > 0.85, (i, corr)


@pytest.mark.parametrize("fmt,mode", [("png", "L"), ("png", "LA"), ("png", "RGB"), ("png", "RGBA"), ("png", "P"),
                                      ("png", "I;16"), ("jpeg", "RGB"), ("jpeg", "L"), ("bmp", "RGB"),
                                      ("gif", "P"), ("webp", "RGB"), ("webp", "RGBA"), ("tiff", "RGB")])
def test_formats_and_modes_agree(tmp_path, fmt, mode):
    reference = P.mnist_style(Image.fromarray(drawing()))
    grey = drawing()
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode in ("LA", "RGBA"):
        rgba = np.zeros((*grey.shape, 4), np.uint8)
        rgba[..., 3] = 255 - grey  # black ink, opaque where drawn, transparent paper
        img = Image.fromarray(rgba).convert(mode)
    else:
        img = Image.fromarray(grey).convert(mode)
    path = tmp_path / f"d.{fmt}"
    img.save(path)
    out = P.load_digit(path)
    assert (out.float() - reference.float()).abs().mean() < 6, (fmt, mode)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(drawing(size=(120, 60)))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert P.open_image(tmp_path / "phone.jpg").size == (60, 120)


def test_as_is_leaves_mnist_images_alone(tmp_path, test_digits):
    digit = test_digits[0][0]
    Image.fromarray(digit.numpy()).save(tmp_path / "d.png")
    assert torch.equal(P.load_digit(tmp_path / "d.png", normalize=False), digit)
    Image.fromarray(digit.numpy()).resize((56, 56)).save(tmp_path / "big.png")
    assert P.load_digit(tmp_path / "big.png", normalize=False).shape == (28, 28)


# ------------------------------------------------------------------------------------------------- bad input
def bad(tmp_path, test_digits):
    good = tmp_path / "good.png"
    render_like_a_person(test_digits[0][0].numpy(), np.random.default_rng(0)).save(good)
    jpeg = tmp_path / "good.jpg"
    Image.open(good).save(jpeg)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image\n")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:300])
    (tmp_path / "cut.jpg").write_bytes(jpeg.read_bytes()[:400])
    Image.new("RGB", (200, 100), "white").save(tmp_path / "blank.png")
    png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    (tmp_path / "folder.png").mkdir()


@pytest.mark.parametrize("name,message", [
    ("missing.png", "file not found"), ("empty.png", "empty file"), ("text.png", "not an image"),
    ("cut.png", "truncated or corrupt"), ("cut.jpg", "truncated or corrupt"), ("blank.png", "no ink found"),
    ("bomb.png", "decompression bomb"), ("folder.png", "not a file"),
])
def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path, test_digits, name, message):
    bad(tmp_path, test_digits)
    with pytest.raises(TinyMnistError) as e:
        P.load_digit(tmp_path / name)
    text = str(e.value)
    assert text.startswith(str(tmp_path / name)) and message in text and "\n" not in text


def test_pixel_limit_is_ours_not_pillows(tmp_path):
    Image.new("L", (300, 200), 255).save(tmp_path / "wide.png")
    with pytest.raises(TinyMnistError, match="refused: 300x200 = 60,000 pixels, over the limit of 50,000"):
        P.open_image(tmp_path / "wide.png", max_pixels=50_000)
    assert P.open_image(tmp_path / "wide.png", max_pixels=60_000).size == (300, 200)


def test_pillows_own_bomb_warning_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    Image.new("L", (150, 100), 255).save(tmp_path / "b.png")  # 15k pixels: Pillow warns (not raises) here
    with pytest.raises(TinyMnistError, match="decompression bomb"):
        P.open_image(tmp_path / "b.png")
