"""Draw the sample images in examples/digits/: digits the way people hand them to a model, not the way MNIST
stores them. Dark ink on light paper, big canvases, off-centre, fine pens and fat markers, a transparent PNG
from a drawing app, a JPEG "photo" with uneven light and a coloured pen.

    python examples/draw_digits.py        # rewrites examples/digits/*

Strokes are drawn with Pillow from a few points per digit (coordinates are fractions of a square box).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Per digit: ("line", points) | ("ellipse", box) | ("arc", box, start_deg, end_deg); Pillow's angles run
# clockwise from 3 o'clock.
STROKES = {
    0: [("ellipse", (0.28, 0.12, 0.72, 0.88))],
    1: [("line", [(0.40, 0.26), (0.55, 0.12), (0.55, 0.88)])],
    2: [("arc", (0.28, 0.12, 0.72, 0.50), 180, 25), ("line", [(0.68, 0.40), (0.28, 0.88), (0.74, 0.88)])],
    3: [("arc", (0.30, 0.12, 0.70, 0.50), 200, 90), ("arc", (0.27, 0.50, 0.73, 0.88), 270, 155)],
    4: [("line", [(0.62, 0.88), (0.62, 0.12), (0.26, 0.62), (0.76, 0.62)])],
    5: [("line", [(0.72, 0.12), (0.34, 0.12), (0.31, 0.46)]), ("arc", (0.27, 0.38, 0.73, 0.88), 215, 150)],
    6: [("arc", (0.27, 0.10, 0.95, 0.90), 190, 265), ("ellipse", (0.28, 0.50, 0.70, 0.88))],
    7: [("line", [(0.28, 0.14), (0.72, 0.14), (0.44, 0.88)])],
    8: [("ellipse", (0.33, 0.12, 0.67, 0.48)), ("ellipse", (0.29, 0.48, 0.71, 0.88))],
    9: [("ellipse", (0.30, 0.12, 0.70, 0.50)), ("line", [(0.70, 0.30), (0.64, 0.88)])],
}


def draw(digit: int, size: tuple[int, int], box: tuple[float, float, float], pen: int,
         ink=(25, 25, 30, 255), paper=(255, 255, 255, 255), mode: str = "RGB") -> Image.Image:
    """`box` = (left, top, side) of the digit's square in pixels."""
    img = Image.new("RGBA", size, paper)
    d = ImageDraw.Draw(img)
    left, top, side = box

    def p(x: float, y: float) -> tuple[float, float]:
        return left + x * side, top + y * side

    for kind, *args in STROKES[digit]:
        if kind == "line":
            d.line([p(*xy) for xy in args[0]], fill=ink, width=pen, joint="curve")
        elif kind == "ellipse":
            x0, y0, x1, y1 = args[0]
            d.ellipse([p(x0, y0), p(x1, y1)], outline=ink, width=pen)
        else:
            (x0, y0, x1, y1), start, end = args
            d.arc([p(x0, y0), p(x1, y1)], start, end, fill=ink, width=pen)
    return img.convert(mode)


def photo(img: Image.Image, seed: int = 0) -> Image.Image:
    """Make a drawing look photographed: light falling off across the sheet, a warm cast, sensor noise."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    h, w = a.shape[:2]
    light = np.linspace(1.0, 0.80, w)[None, :, None] * np.linspace(1.0, 0.92, h)[:, None, None]
    noise = np.random.default_rng(seed).normal(0, 4, a.shape)
    out = a * light * np.array([1.0, 0.96, 0.88]) + noise
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def main() -> None:
    out = Path(__file__).resolve().parent / "digits"
    out.mkdir(exist_ok=True)
    draw(0, (640, 480), (300, 60, 330), pen=5).save(out / "zero_fine_pen.png")
    draw(1, (400, 600), (40, 250, 300), pen=28).save(out / "one_marker.png")
    # A drawing app's export: black strokes on a transparent canvas.
    draw(2, (512, 512), (90, 70, 380), pen=14, paper=(0, 0, 0, 0), mode="RGBA").save(out / "two_transparent.png")
    photo(draw(3, (800, 600), (120, 120, 420), pen=16, ink=(30, 40, 140, 255))).save(
        out / "three_photo.jpg", quality=80)
    draw(4, (64, 64), (4, 10, 50), pen=4, mode="L").save(out / "four_small.png")
    draw(5, (500, 700), (60, 300, 360), pen=9, ink=(200, 20, 20, 255)).save(out / "five_red_pen.png")
    draw(7, (700, 500), (330, 80, 320), pen=3).save(out / "seven_thin.gif")
    draw(8, (600, 600), (120, 100, 400), pen=36).save(out / "eight_thick.webp", quality=90)
    draw(9, (180, 240), (10, 40, 150), pen=6, mode="L").save(out / "nine.bmp")


if __name__ == "__main__":
    main()
