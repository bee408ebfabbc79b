"""Every image grid of the project, one place: the sample stage's contact sheet (`sheet`) and the report's
labelled grid (`labelled`: references on the left, one captioned row per prompt). PIL only; the font is
the DejaVu Sans that matplotlib ships, so no system font is needed and the sample stage imports no plotting."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from dreamsolo.files import atomic_file

WARN_RED = "#c62828"  # the random-evaluator warning, as the plots show it


def sheet(images: list[Image.Image], cols: int) -> Image.Image:
    """The images in rows of `cols` (one row per prompt, one column per seed), no labels."""
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    out = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        out.paste(im, ((i % cols) * w, (i // cols) * h))
    return out


def labelled(images: list[list[Image.Image]], row_labels: list[str], path: Path,
                references: list[tuple[str, Image.Image]] | None = None,
                title: str = "", warning: str | None = None, cell: int = 96) -> Path:
    """One PNG: references stacked on the left, then one labelled row of samples per prompt."""
    bold, small = _font(13, bold=True), _font(11)
    pad, label_w = 8, 230
    ref_w = cell * 2 if references else 0
    header = 30 + (20 if warning else 0)
    ncols = max((len(r) for r in images), default=0)
    row_h = cell + pad
    ref_h = sum(ref_w + 22 for _ in references or [])
    body_h = max(len(images) * row_h, ref_h)
    left = pad + (ref_w + 2 * pad if references else 0)
    width = left + label_w + ncols * (cell + 2) + pad
    canvas = Image.new("RGB", (width, header + body_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), title, fill="#222", font=_font(16, bold=True))
    if warning:
        draw.text((pad, 28), f"⚠ {warning}", fill=WARN_RED, font=bold)
    y = header
    for name, ref in references or []:
        draw.text((pad, y), name, fill="#444", font=small)
        canvas.paste(_thumb(ref, ref_w), (pad, y + 16))
        y += ref_w + 22
    if references:
        draw.line([(left - pad, header), (left - pad, header + body_h)], fill="#ddd", width=1)
    for r, (row, label) in enumerate(zip(images, row_labels)):
        top = header + r * row_h
        kind, _, prompt = label.partition(": ")
        draw.text((left, top + 4), kind, fill="#333", font=bold)
        lines = _wrap(prompt, small, label_w - 16)[: max(1, (cell - 22) // 15)]
        draw.multiline_text((left, top + 22), "\n".join(lines), fill="#555", font=small, spacing=2)
        for c, img in enumerate(row):
            canvas.paste(_thumb(img, cell), (left + label_w + c * (cell + 2), top))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG", optimize=False)
    return path


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to a pixel width."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _thumb(img: Image.Image, size: int) -> Image.Image:
    img = img.convert("RGB")
    if img.size == (size, size):
        return img
    # Upscaled toy images stay crisp with NEAREST; real photos downscale with a good filter.
    resample = Image.Resampling.NEAREST if img.width < size else Image.Resampling.LANCZOS
    return img.resize((size, size), resample)


@lru_cache(maxsize=8)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans shipped with matplotlib (no system font needed)."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        import matplotlib  # only for its data path: no backend is loaded

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
    except OSError:
        return ImageFont.load_default()
