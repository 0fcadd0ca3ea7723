"""Preprocessing: any image a person made -> a 28x28 MNIST-style digit.

MNIST digits are white on black, their longer side scaled to 20 px (aspect kept, anti-aliased) and placed in a
28x28 field so that their centre of mass sits in the middle. A photo or a drawing is usually dark ink on light
paper, any size, anywhere in the frame, in colour, maybe with transparency. A model trained on MNIST only reads
such an image well after it has been brought to the same form, one small step at a time:

    open_image          decode (PNG, JPEG, BMP, GIF, WebP, TIFF, ...), apply EXIF rotation, refuse bombs
    to_grey             any mode -> float grey in [0, 1]; transparency flattened onto white paper
    to_light_on_dark    detect dark-on-light (the background is light) and invert
    remove_background   subtract the paper (a smooth fit: photos are unevenly lit), stretch the ink to white
    ink_box             bounding box of the ink (no ink: a blank image, refused)
    crop_to_ink         crop to that box
    thicken_thin_strokes  a fine pen on a big canvas would vanish at 20 px: widen such strokes to MNIST's width
    fit_box             scale the longer side to 20 px keeping the aspect ratio
    centre_by_mass      paste into 28x28 so the centre of mass lands on the centre pixel
                        (Fashion-MNIST instead: longer side 28 px, bounding box centred, no thickening)
    to_uint8            -> uint8, the form the dataset has; training's normalisation is applied by the predictor

Each step is a pure function of arrays (float32, [H, W], values in [0, 1]) and is tested on its own.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import TinyMnistError, first_line

# Decoded-pixel limit: a 50-megapixel photo still passes, a crafted 100k x 100k PNG (a few hundred bytes on disk,
# tens of GB once decoded) does not. Checked from the header, before anything is decoded.
MAX_PIXELS = 50_000_000
MAX_FILE_BYTES = 256 * 2**20  # more than any 50-megapixel PNG needs; refuses reading a disk image into memory
# Images larger than this (longer side) are box-shrunk by an integer factor first: the digit ends up 20 px tall,
# so more resolution only costs time and memory.
WORKING_SIDE = 2048
# What folder scanning picks up (a file named explicitly is always tried, whatever its suffix).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm",
                            ".pbm", ".pnm"})

DIGIT_BOX = 20  # MNIST: the longer side of the digit
FIELD = 28  # MNIST: the image side
# After background removal, a pixel counts as ink from this level on (a fraction of the darkest ink): low enough
# to keep the anti-aliased edges of a stroke, high enough to ignore JPEG ringing and paper texture.
INK_LEVEL = 0.15
# Below this contrast between ink and paper (fraction of the full grey range) the image is called blank: that is
# ~25 grey levels, more than JPEG noise on white paper, far less than any pen or pencil stroke.
MIN_CONTRAST = 0.1
# MNIST's median stroke is 2.5 px wide for a 20 px digit (measured on the test set at 8x resolution); strokes
# under 60% of that (1.5 px, MNIST's 5th percentile or so) are thickened, see `thicken_thin_strokes`.
STROKE_FRACTION = 0.125
THIN_STROKE = 0.6


@dataclass(frozen=True)
class Layout:
    """How a dataset places its object in the 28x28 field."""

    box: int  # longer side of the object, in pixels
    by_mass: bool  # centre by centre of mass (MNIST) or by bounding box (Fashion-MNIST)
    thicken: bool  # widen thin strokes: digits are strokes; garments are filled shapes


# MNIST: digit scaled into 20x20, centred by centre of mass (measured: the longer side is 20 px in 9,997 of 10,000
# test images). Fashion-MNIST: the product's longer side is 28 px (9,833 of 10,000), its bounding box centred.
LAYOUTS = {"mnist": Layout(box=DIGIT_BOX, by_mass=True, thicken=True),
           "fashion-mnist": Layout(box=FIELD, by_mass=False, thicken=False)}


# ------------------------------------------------------------------------------------------------------- decode
def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image file fully (so a truncated file fails here, with its name), upright per its EXIF tag.

    Every way a file can be unusable becomes a TinyMnistError naming the file and the cause.
    """
    path = Path(path)
    if not path.exists():
        raise TinyMnistError(f"{path}: file not found")
    if not path.is_file():
        raise TinyMnistError(f"{path}: not a file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TinyMnistError(f"{path}: refused: {size:,} bytes, over the limit of {MAX_FILE_BYTES:,} for one image")
        data = path.read_bytes()  # one read, and no file handle to keep open
    except OSError as e:
        raise TinyMnistError(f"{path}: cannot read ({e.strerror})") from None
    if not data:
        raise TinyMnistError(f"{path}: empty file")
    # Pillow only warns between its own limit and twice that; make the warning an error like the rest.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise TinyMnistError(f"{path}: refused: too many pixels, a possible decompression bomb ({e})") from None
        except UnidentifiedImageError:
            raise TinyMnistError(f"{path}: not an image (or a format Pillow cannot read)") from None
        except Exception as e:  # noqa: BLE001 - a header that parses as a known format but makes no sense
            raise TinyMnistError(f"{path}: truncated or corrupt image ({first_line(e)})") from None
        w, h = img.size
        if w * h > max_pixels:
            raise TinyMnistError(
                f"{path}: refused: {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                "(a guard against decompression bombs; downscale the image first)"
            )
        if w == 0 or h == 0:
            raise TinyMnistError(f"{path}: image has no pixels ({w}x{h})")
        try:
            img.load()
            # Phone photos are often stored sideways with an EXIF "orientation" tag saying how to turn them.
            return ImageOps.exif_transpose(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise TinyMnistError(f"{path}: refused: too many pixels, a possible decompression bomb ({e})") from None
        except Exception as e:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError, EOFError...
            raise TinyMnistError(f"{path}: truncated or corrupt image ({first_line(e)})") from None


# --------------------------------------------------------------------------------------------------------- grey
def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    factor = -(-max(img.size) // max_side)  # ceil
    return img.reduce(factor) if factor > 1 else img


def to_grey(img: Image.Image, background: float = 1.0, max_side: int = WORKING_SIDE) -> np.ndarray:
    """Any Pillow mode -> float32 grey [H, W] in [0, 1] (0 black, 1 white).

    Transparent pixels are laid over `background` (1.0 = white paper). 16-bit and 32-bit integer images keep
    their full range instead of being clipped at 255. Images with a longer side above `max_side` are shrunk.
    When the colour carries no picture but the transparency does (one ink colour on a transparent canvas), the
    opacity itself is the drawing.
    """
    mode = img.mode
    alpha = None
    if mode.startswith("I;16"):
        grey = Image.fromarray(np.asarray(img, dtype=np.float32) / 65535.0)
        grey = np.asarray(_shrink(grey, max_side), dtype=np.float32)
    elif mode in ("I", "F"):
        shrunk = np.asarray(_shrink(img, max_side), dtype=np.float32)
        top = float(shrunk.max()) if shrunk.size else 0.0
        # A 32-bit container usually holds 16-bit data (Pillow opens some 16-bit files as "I"); float is 0..1 or 0..255
        scale = (65535.0 if top > 255 else 255.0) if mode == "I" else (255.0 if top > 1.0 else 1.0)
        grey = np.clip(shrunk / scale, 0.0, 1.0)
    else:
        has_alpha = "A" in mode or "a" in mode or "transparency" in img.info
        try:
            if has_alpha and mode not in ("LA", "RGBA"):
                img = img.convert("RGBA")  # palette/colour transparency -> a real alpha channel
            # Pillow's own grey conversion (ITU-R 601 luma, in C) is the fast way from colour to grey.
            canonical = img.convert("LA" if has_alpha else "L")
        except ValueError:  # a mode Pillow cannot convert (internal ones such as premultiplied "La")
            raise TinyMnistError(f"unsupported image mode '{mode}'") from None
        arr = np.asarray(_shrink(canonical, max_side), dtype=np.float32) / 255.0
        grey = arr[..., 0] if has_alpha else arr
        if has_alpha:
            alpha = arr[..., 1]
    if alpha is not None:
        flat = alpha * grey + (1.0 - alpha) * background
        if np.ptp(flat) < MIN_CONTRAST <= np.ptp(alpha):
            # e.g. white strokes on a transparent canvas: flattened onto white they vanish; the alpha is the ink.
            return (1.0 - alpha).astype(np.float32)
        grey = flat
    return np.ascontiguousarray(grey, dtype=np.float32)


# --------------------------------------------------------------------------------------------------- polarity
def _frame(shape: tuple[int, ...]) -> np.ndarray:
    """Mask of the outer frame of an image (about 4% of each side, at least one pixel): where the paper is."""
    h, w = shape
    t = max(1, min(h, w) // 25)
    mask = np.zeros((h, w), dtype=bool)
    mask[:t], mask[-t:], mask[:, :t], mask[:, -t:] = True, True, True, True
    return mask


def _border(x: np.ndarray) -> np.ndarray:
    return x[_frame(x.shape)]


def background_level(x: np.ndarray) -> float:
    """The paper's grey level: the median of the image border (a digit rarely covers most of the frame)."""
    return float(np.median(_border(x)))


def is_dark_on_light(x: np.ndarray) -> bool:
    """True when the background is light (ink on paper); MNIST is the other way round."""
    return background_level(x) > 0.5


def to_light_on_dark(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """White ink on a black background, as MNIST has it. Returns (image, whether it was inverted)."""
    if is_dark_on_light(x):
        return 1.0 - x, True
    return x, False


def background_surface(x: np.ndarray) -> np.ndarray:
    """The paper's level at every pixel, [H, W].

    A photo of a sheet is rarely evenly lit: one side darker, corners darker. Light varies smoothly, so a
    quadratic surface in (row, column), fitted to the image's frame, follows it; ink that touches the frame is
    dropped from the fit as an outlier (residual beyond 3 robust standard deviations). On evenly lit paper, and
    on MNIST's black surround, the surface comes out flat.
    """
    h, w = x.shape
    if min(h, w) < 8:
        return np.full((h, w), background_level(x), dtype=np.float32)
    rows, cols = _frame_coords(h, w)  # ~1,000 points: plenty for six coefficients
    v, u = rows / (h - 1) * 2 - 1, cols / (w - 1) * 2 - 1
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    z = x[rows, cols].astype(np.float64)
    keep = np.ones(z.shape, dtype=bool)
    for _ in range(3):
        a = design[keep]
        # Normal equations, a 6x6 solve: np.linalg.lstsq's SVD costs ~100x more for the same answer here.
        # (einsum rather than `@` keeps BLAS and its threads out of a per-image step.)
        coef = np.linalg.solve(np.einsum("ni,nj->ij", a, a) + 1e-9 * np.eye(6), np.einsum("ni,n->i", a, z[keep]))
        residual = np.abs(z - np.einsum("ni,i->n", design, coef))
        limit = max(3 * 1.4826 * float(np.median(residual[keep])), 0.02)
        keep = residual <= limit
        if keep.sum() < 12:  # too few paper pixels to trust a curved fit: fall back to a flat level
            return np.full((h, w), background_level(x), dtype=np.float32)
    c0, cu, cv, cuu, cuv, cvv = coef
    vv = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    uu = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    by_row = (c0 + cv * vv + cvv * vv * vv).astype(np.float32)
    by_col = (cu * uu + cuu * uu * uu).astype(np.float32)
    return by_row + by_col + np.float32(cuv) * (vv * uu)


def _frame_coords(h: int, w: int, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of up to about `max_points` pixels spread over the frame `_frame` marks."""
    t = max(1, min(h, w) // 25)
    step = max(1, int(np.sqrt(2 * t * (h + w) / max_points)))  # subsample both ways alike
    r_all, c_all = np.arange(0, h, step), np.arange(0, w, step)
    edge_rows = np.r_[np.arange(0, t, step), np.arange(h - t, h, step)]
    edge_cols = np.r_[np.arange(0, t, step), np.arange(w - t, w, step)]
    top_bottom = np.meshgrid(edge_rows, c_all, indexing="ij")
    left_right = np.meshgrid(r_all, edge_cols, indexing="ij")
    rows = np.concatenate([top_bottom[0].ravel(), left_right[0].ravel()])
    cols = np.concatenate([top_bottom[1].ravel(), left_right[1].ravel()])
    return rows, cols


def remove_background(x: np.ndarray, min_contrast: float = MIN_CONTRAST) -> np.ndarray:
    """Subtract the paper (`background_surface`) and stretch so the brightest ink is 1.0: grey or unevenly lit
    paper and pale pencil end up like MNIST's black background and white strokes. Raises when there is no ink
    to speak of."""
    y = x - background_surface(x)
    peak = float(y.max())
    if peak < min_contrast:
        raise TinyMnistError("no ink found (the image is blank or has almost no contrast)")
    return np.clip(y / peak, 0.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------------------------------- geometry
def ink_box(x: np.ndarray, level: float = INK_LEVEL) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the pixels at or above `level`; bottom/right exclusive."""
    rows = np.flatnonzero((x >= level).any(axis=1))
    cols = np.flatnonzero((x >= level).any(axis=0))
    if rows.size == 0:
        raise TinyMnistError("no ink found (the image is blank)")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop_to_ink(x: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, left, bottom, right = box
    return np.ascontiguousarray(x[top:bottom, left:right], dtype=np.float32)


def stroke_width(x: np.ndarray, level: float = 0.5) -> float:
    """Typical stroke width in pixels: 2 x ink area / boundary pixels of the ink mask (a stroke of width w and
    length L has area wL and 2L boundary pixels). 0.0 when there is no ink."""
    ink = x >= level
    area = int(ink.sum())
    if area == 0:
        return 0.0
    p = np.pad(ink, 1)
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return 2.0 * area / max(area - int(interior.sum()), 1)


def _dilate(x: np.ndarray, k: int) -> np.ndarray:
    """Grey-level dilation with a k x k square (k odd), done as two 1-D sliding maxima."""
    r = k // 2
    x = sliding_window_view(np.pad(x, ((0, 0), (r, r))), k, axis=1).max(axis=-1)
    return sliding_window_view(np.pad(x, ((r, r), (0, 0))), k, axis=0).max(axis=-1)


def thicken_thin_strokes(crop: np.ndarray) -> np.ndarray:
    """Widen strokes that would come out much thinner than MNIST's.

    MNIST strokes are ~2.5 px wide for a 20 px digit (`STROKE_FRACTION` of its longer side). A fine pen on a big
    canvas (3 px lines on a 500 px digit) would shrink to a faint 0.1 px trace, which a model trained on MNIST
    has never seen; that is the usual reason "it fails on my own digits". Strokes above `THIN_STROKE` of the
    MNIST width are left alone (so MNIST-like images pass through unchanged); thinner ones are grown to the
    MNIST width by dilation (the bulk of it at 4x the final size, where it is cheap), and their ink restored to
    full strength. Returns a new tight crop, possibly at that lower resolution.
    """
    longer = max(crop.shape)
    width = stroke_width(crop)
    target = STROKE_FRACTION * longer
    if width == 0 or width >= THIN_STROKE * target:
        return crop
    work = 4 * DIGIT_BOX
    scale = min(1.0, work / longer)
    total = target - width  # width to add, in pixels of `crop`
    if scale < 1:
        # First, at full resolution, make every stroke at least one pixel wide at the working scale, so that
        # shrinking keeps it solid rather than turning it into a faint grey line.
        k0 = min(_odd(1 / scale), _odd(total))
        if k0 > 1:
            crop = _dilate(np.pad(crop, k0 // 2), k0)
            width, total = width + k0 - 1, total - (k0 - 1)
        h, w = crop.shape
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BOX), dtype=np.float32)
    k = _odd(total * scale)
    if k > 1:
        crop = _dilate(np.pad(crop, k // 2), k)  # padded first: the ink grows outward and must stay inside
    return (crop / crop.max()).astype(np.float32)


def _odd(x: float) -> int:
    """The odd window size nearest to x (at least 1)."""
    return max(1, 2 * round((x - 1) / 2) + 1)


def fit_box(crop: np.ndarray, size: int = DIGIT_BOX) -> np.ndarray:
    """Scale so the longer side is `size` px, keeping the aspect ratio (a '1' stays thin).

    Shrinking averages over each target pixel's area (anti-aliasing, as MNIST's own size normalisation did);
    enlarging a tiny drawing interpolates bilinearly.
    """
    h, w = crop.shape
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_h, new_w) == (h, w):
        return crop.copy()
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    out = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32)).resize((new_w, new_h), resample)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted mean position, in pixel-index units."""
    total = float(x.sum())
    if total <= 0:
        return (x.shape[0] - 1) / 2, (x.shape[1] - 1) / 2
    rows = np.arange(x.shape[0], dtype=np.float64)
    cols = np.arange(x.shape[1], dtype=np.float64)
    return float(x.sum(axis=1) @ rows) / total, float(x.sum(axis=0) @ cols) / total


def centre_by_mass(patch: np.ndarray, field: int = FIELD) -> np.ndarray:
    """Paste `patch` into a black field x field image so its centre of mass lands on pixel (field/2, field/2),
    the position MNIST's digits have (their mean centre of mass is at index 14.0 in both directions). Shifts
    are whole pixels, as in MNIST; a lopsided patch is kept inside the field."""
    h, w = patch.shape
    cy, cx = centre_of_mass(patch)
    top = min(max(round(field / 2 - cy), 0), field - h)
    left = min(max(round(field / 2 - cx), 0), field - w)
    out = np.zeros((field, field), dtype=np.float32)
    out[top:top + h, left:left + w] = patch
    return out


def centre_by_box(patch: np.ndarray, field: int = FIELD) -> np.ndarray:
    """Paste `patch` into the middle of a black field x field image (Fashion-MNIST's placement; an odd margin
    puts the extra pixel before the patch, as Fashion-MNIST does: its mean box centre is 13.6, not 13.5)."""
    h, w = patch.shape
    top, left = (field - h + 1) // 2, (field - w + 1) // 2
    out = np.zeros((field, field), dtype=np.float32)
    out[top:top + h, left:left + w] = patch
    return out


def to_uint8(x: np.ndarray) -> torch.Tensor:
    """float [0, 1] -> uint8 tensor, the dataset's own pixel format."""
    return torch.from_numpy(np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))


# ------------------------------------------------------------------------------------------------- pipelines
def mnist_style(img: Image.Image, dataset: str = "mnist") -> torch.Tensor:
    """The whole pipeline: a decoded image -> uint8 [28, 28], light object on black, placed the way `dataset`
    places its images (see LAYOUTS)."""
    layout = LAYOUTS.get(dataset, LAYOUTS["mnist"])
    grey = to_grey(img, background=1.0)
    x, _ = to_light_on_dark(grey)
    x = remove_background(x)
    crop = crop_to_ink(x, ink_box(x))
    if layout.thicken:
        crop = thicken_thin_strokes(crop)
    patch = fit_box(crop, layout.box)
    return to_uint8(centre_by_mass(patch) if layout.by_mass else centre_by_box(patch))


def as_is(img: Image.Image) -> torch.Tensor:
    """No normalisation: for images that already look like MNIST (white on black, digit centred). Only turned
    grey (transparency over black) and, if needed, resized to 28x28."""
    grey = to_grey(img, background=0.0)
    if grey.shape != (FIELD, FIELD):
        resample = Image.Resampling.BOX if max(grey.shape) > FIELD else Image.Resampling.BILINEAR
        grey = np.asarray(Image.fromarray(grey).resize((FIELD, FIELD), resample), dtype=np.float32)
    return to_uint8(grey)


def load_digit(path: str | Path, normalize: bool = True, dataset: str = "mnist",
               max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Read one image file as a uint8 [28, 28] tensor ready for `data.normalize`, laid out like `dataset`'s
    images. Errors name the file."""
    img = open_image(path, max_pixels)
    try:
        return mnist_style(img, dataset) if normalize else as_is(img)
    except TinyMnistError as e:
        raise TinyMnistError(f"{path}: {e}") from None
