"""Pictures: a kernel beside its frequency response, and contact sheets.

Everything here returns an RGB ``uint8`` array; :func:`imgconv.io.write_image`
writes it, so ``io`` stays the only module that reads and writes image files.
This module does use Pillow, for drawing only (``Image``, ``ImageDraw``,
``ImageFont``, resampling): lettering needs a font rasteriser, which numpy does
not have, and Pillow is already installed.  Matplotlib would be a heavy
dependency for two kinds of picture, so the default install stays light.

No numba here: ``imgconv show --plot`` computes the frequency response with
numpy's FFT and starts as fast as ``show``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from imgconv import choices

__all__ = ["kernel_picture", "frequency_response", "contact_sheet", "thumbnail", "to_display"]

PANEL = 240  # pixels per side of a heat map or a frequency plot
MARGIN = 16
GAP = 28
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
FAINT = (110, 110, 110)
MAX_ROWS = 8  # kernels drawn in one picture
_MAX_LABELLED_SIDE = 9  # kernels up to 9x9 get their values printed in the cells
_MIN_LABELLED_CELL = 24

# Colour maps as control points (position, RGB), interpolated linearly.
_DIVERGING = [(-1.0, (49, 84, 178)), (-0.5, (140, 170, 230)), (0.0, (247, 247, 247)), (0.5, (232, 145, 120)), (1.0, (170, 20, 40))]
_SEQUENTIAL = [(0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)), (1.0, (253, 231, 37))]


def _font(size=13):

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):  # no FreeType: Pillow's bitmap font
        return ImageFont.load_default()


def _colourise(values, stops):
    """values (any shape) -> (..., 3) uint8 through a control-point colour map."""
    positions = np.array([p for p, _ in stops])
    colours = np.array([c for _, c in stops], dtype=np.float64)
    flat = np.clip(np.asarray(values, dtype=np.float64), positions[0], positions[-1])
    channels = [np.interp(flat, positions, colours[:, k]) for k in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def _text_width(draw, text, font):
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _fit_text(draw, text, font, width):
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    while text and _text_width(draw, text + "…", font) > width:
        text = text[:-1]
    return text + "…"


def _wrap(draw, text, font, width):
    """``text`` broken into lines of at most ``width`` pixels, at spaces."""
    lines, current = [], ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and _text_width(draw, candidate, font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    return [_fit_text(draw, line, font, width) for line in lines]


def _format_cell(value, digits=3):
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    return text.replace("e-0", "e-").replace("e+0", "e")


def frequency_response(matrix, size=None):
    """|H|: the magnitude of the kernel's 2-D Fourier transform on a square
    grid of ``size`` frequencies per axis (default: at least 64 and 4 per
    kernel tap, a power of two), zero frequency in the middle
    (``numpy.fft.fftshift``); the horizontal axis is horizontal frequency,
    from -0.5 to just under +0.5 cycles per pixel."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if size is None:
        side = max(matrix.shape)
        size = 1 << max(6, (4 * side - 1).bit_length())
        size = max(min(size, 1024), 1 << (side - 1).bit_length())
    spectrum = np.fft.fft2(matrix, s=(size, size))
    return np.fft.fftshift(np.abs(spectrum))


def _resize(rgb, width, height):

    image = Image.fromarray(rgb)
    enlarging = width >= rgb.shape[1] and height >= rgb.shape[0]
    method = Image.Resampling.NEAREST if enlarging else Image.Resampling.BOX
    return image.resize((width, height), method)


def _heat_map(matrix, font):
    """The kernel as coloured cells (blue negative, white zero, red positive),
    values printed in the cells of small kernels; a PIL image of at most PANEL."""

    rows, cols = matrix.shape
    peak = float(np.abs(matrix).max()) or 1.0
    rgb = _colourise(matrix / peak, _DIVERGING)
    cell = PANEL / max(rows, cols)
    width, height = max(1, round(cols * cell)), max(1, round(rows * cell))
    image = _resize(rgb, width, height)
    if max(rows, cols) <= _MAX_LABELLED_SIDE and cell >= _MIN_LABELLED_CELL:
        draw = ImageDraw.Draw(image)
        small = _font(max(9, min(14, int(cell / 3.2))))
        labels = None
        for digits in (3, 2):
            texts = {rc: _format_cell(float(v), digits) for rc, v in np.ndenumerate(matrix)}
            if all(_text_width(draw, t, small) <= cell - 4 for t in texts.values()):
                labels = texts
                break
        for (r, c), value in np.ndenumerate(matrix):
            if labels is None:
                break
            text = labels[r, c]
            colour = rgb[r, c].astype(float)
            luminance = 0.2126 * colour[0] + 0.7152 * colour[1] + 0.0722 * colour[2]
            ink = (255, 255, 255) if luminance < 110 else (20, 20, 20)
            box = draw.textbbox((0, 0), text, font=small)
            x = (c + 0.5) * cell - (box[2] - box[0]) / 2 - box[0]
            y = (r + 0.5) * cell - (box[3] - box[1]) / 2 - box[1]
            draw.text((x, y), text, fill=ink, font=small)
        for k in range(1, cols):  # thin grid lines between cells
            draw.line([(round(k * cell), 0), (round(k * cell), height)], fill=(200, 200, 200))
        for k in range(1, rows):
            draw.line([(0, round(k * cell)), (width, round(k * cell))], fill=(200, 200, 200))
    return image


def _response_map(matrix):

    response = frequency_response(matrix)
    peak = float(response.max())
    scaled = response / peak if peak > 0 else response
    rgb = _colourise(scaled, _SEQUENTIAL)
    image = Image.fromarray(rgb)
    method = Image.Resampling.NEAREST if response.shape[0] <= PANEL else Image.Resampling.BOX
    return image.resize((PANEL, PANEL), method), peak


def _colour_bar(canvas, draw, x, y, width, stops, labels, font):

    ramp = np.linspace(stops[0][0], stops[-1][0], width)
    bar = _colourise(np.tile(ramp, (8, 1)), stops)
    canvas.paste(Image.fromarray(bar), (x, y))
    draw.rectangle([x, y, x + width - 1, y + 7], outline=(180, 180, 180))
    positions = [x, x + width // 2, x + width] if len(labels) == 3 else [x, x + width]
    for index, (label, position) in enumerate(zip(labels, positions)):
        text_width = _text_width(draw, label, font)
        if index == 0:
            left = position
        elif index == len(labels) - 1:
            left = position - text_width
        else:
            left = position - text_width // 2
        draw.text((left, y + 10), label, fill=FAINT, font=font)


def kernel_picture(title, panels, *, notes=()):
    """A picture of kernels: for each, a heat map beside the magnitude of its
    frequency response.

    Parameters
    ----------
    title : str
        Drawn at the top (the filter's name and parameters).
    panels : list of (str, array)
        A heading and a 2-D kernel for each row (at most ``MAX_ROWS`` are drawn).
    notes : list of str
        Lines drawn under the title (how kernels combine, bias, ...).

    Returns
    -------
    numpy.ndarray of uint8, shape (H, W, 3)
    """

    font = _font(13)
    big = _font(17)
    small = _font(11)
    panels = list(panels)
    omitted = len(panels) - MAX_ROWS
    panels = panels[:MAX_ROWS]
    if omitted > 0:
        notes = list(notes) + [f"(and {omitted} more kernels, not drawn)"]
    width = 2 * MARGIN + 2 * PANEL + GAP
    scratch = ImageDraw.Draw(Image.new("RGB", (width, 10)))
    title_lines = _wrap(scratch, title, big, width - 2 * MARGIN)
    note_lines = [line for note in notes for line in _wrap(scratch, note, font, width - 2 * MARGIN)]
    header = MARGIN + 22 * len(title_lines) + 17 * len(note_lines) + 8
    row_height = 20 + PANEL + 52
    height = header + row_height * len(panels) + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    for line in title_lines:
        draw.text((MARGIN, y), line, fill=INK, font=big)
        y += 22
    for line in note_lines:
        draw.text((MARGIN, y), line, fill=FAINT, font=font)
        y += 17
    y = header
    for heading, matrix in panels:
        matrix = np.asarray(matrix, dtype=np.float64)
        rows, cols = matrix.shape
        left, right = MARGIN, MARGIN + PANEL + GAP
        draw.text((left, y), _fit_text(draw, f"{heading} ({rows}x{cols}, sum {float(matrix.sum()):.4g})", font, PANEL + GAP - 6), fill=INK, font=font)
        draw.text((right, y), "frequency response |H|", fill=INK, font=font)
        top = y + 20
        heat = _heat_map(matrix, font)
        offset_x = left + (PANEL - heat.width) // 2
        offset_y = top + (PANEL - heat.height) // 2
        canvas.paste(heat, (offset_x, offset_y))
        draw.rectangle([offset_x - 1, offset_y - 1, offset_x + heat.width, offset_y + heat.height], outline=(160, 160, 160))
        response, peak = _response_map(matrix)
        canvas.paste(response, (right, top))
        draw.rectangle([right - 1, top - 1, right + PANEL, top + PANEL], outline=(160, 160, 160))
        # Frequency axes: zero in the middle, +-0.5 cycles per pixel at the edges.
        middle = right + PANEL // 2
        draw.line([(middle, top + PANEL), (middle, top + PANEL + 3)], fill=FAINT)
        draw.text((right, top + PANEL + 3), "-0.5", fill=FAINT, font=small)
        draw.text((middle - _text_width(draw, "0", small) // 2, top + PANEL + 3), "0", fill=FAINT, font=small)
        axis = "+0.5 cycles/pixel"
        draw.text((right + PANEL - _text_width(draw, axis, small), top + PANEL + 3), axis, fill=FAINT, font=small)
        extreme = float(np.abs(matrix).max())
        bar_y = top + PANEL + 20
        _colour_bar(canvas, draw, left, bar_y, PANEL, _DIVERGING, [f"{-extreme:.3g}", "0", f"{extreme:.3g}"], small)
        _colour_bar(canvas, draw, right, bar_y, PANEL, _SEQUENTIAL, ["0", "|H|", f"{peak:.3g}"], small)
        y += row_height
    return np.asarray(canvas)


# ---------------------------------------------------------------------------
# contact sheets


def unit_float(pixels, has_alpha):
    """``pixels`` as (H, W, C) float32 with full scale 1 (integers divided by
    their maximum), and whether the last channel is alpha (by default: 2 or 4 channels)."""
    array = np.asarray(pixels)
    if array.ndim == 2:
        array = array[..., None]
    if has_alpha is None:
        has_alpha = choices.default_has_alpha(array.shape[2])
    if array.dtype.kind in "iu":
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max), has_alpha
    return array.astype(np.float32), has_alpha


#: Edge and gradient tiles map this percentile of their response to full contrast.
STRETCH_PERCENTILE = 99.5


def needs_stretch(chain) -> bool:
    """Whether a chain's result is a response (edges, gradients) rather than a
    picture: some step's kernels do not sum to 1, so flat areas do not keep their value."""
    from imgconv.filtering import preserves_flat_areas

    return not all(preserves_flat_areas(step.filter) for step in chain.steps)


def stretch_for_display(values, chain, has_alpha):
    """A float response (full scale 1) mapped so its ``STRETCH_PERCENTILE``-th
    percentile fills the display range: about 0.5 for an ``offset`` response
    (zero is mid-grey), about 0 otherwise.  Alpha is left as it is."""
    values = np.array(values, np.float32)
    colour = values[..., :-1] if has_alpha and values.ndim == 3 else values
    neutral = 0.5 if chain.steps[-1].filter.out_range == "offset" else 0.0
    spread = float(np.percentile(np.abs(colour - neutral), STRETCH_PERCENTILE)) if colour.size else 0.0
    if spread > 1e-6:
        scale = (0.5 if neutral else 1.0) / spread
        colour[...] = neutral + (colour - neutral) * np.float32(scale)
    return values


def to_display(pixels, has_alpha=None):
    """Any image array as 8-bit RGB for a contact sheet: 16-bit scaled down,
    float clipped to 0..1, grey made RGB, alpha composited over a checkerboard."""
    values, has_alpha = unit_float(pixels, has_alpha)
    values = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    colour = values[..., :-1] if has_alpha else values
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    elif colour.shape[2] != 3:
        colour = colour[..., :3]
    if has_alpha:
        alpha = values[..., -1:]
        rows, cols = np.indices(values.shape[:2])
        checker = np.where(((rows // 8) + (cols // 8)) % 2 == 0, 0.8, 0.6).astype(np.float32)[..., None]
        colour = colour * alpha + checker * (1.0 - alpha)
    return np.rint(colour * 255.0).astype(np.uint8)


def thumbnail(pixels, size, *, has_alpha=None):
    """``pixels`` scaled down (never up) so the longer side is at most
    ``size``, as float32 in 0..1 (alpha included, premultiplied while
    resampling), ready to filter as a float image."""

    flat = np.ndim(pixels) == 2
    integer = np.asarray(pixels).dtype.kind in "iu"
    values, has_alpha = unit_float(pixels, has_alpha)
    height, width, channels = values.shape
    factor = size / max(height, width)
    if factor < 1:
        new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
        if has_alpha:
            values = values.copy()
            values[..., :-1] *= values[..., -1:]
        planes = [
            np.asarray(Image.fromarray(np.ascontiguousarray(values[..., c])).resize(new_size, Image.Resampling.LANCZOS))
            for c in range(channels)
        ]
        values = np.stack(planes, axis=-1)
        if integer:
            values = np.clip(values, 0.0, 1.0)
        if has_alpha:
            alpha = values[..., -1:]
            values[..., :-1] = np.where(alpha > 1e-6, values[..., :-1] / np.maximum(alpha, 1e-6), 0.0)
    values = np.ascontiguousarray(values, dtype=np.float32)
    return values[..., 0] if flat else values


def contact_sheet(tiles, *, columns=None, size=192, title=None):
    """Images in a grid, each labelled underneath.

    Parameters
    ----------
    tiles : list of (str, ndarray)
        A label and an 8-bit RGB image (see :func:`to_display`) for each tile.
    columns : int, optional
        Tiles per row; by default about as many as rows.
    size : int
        The side of the square each image is fitted into.
    title : str, optional
        A line above the grid.

    Returns
    -------
    numpy.ndarray of uint8, shape (H, W, 3)
    """

    tiles = list(tiles)
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    if columns is None:
        columns = max(1, math.ceil(math.sqrt(len(tiles))))
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    font = _font(13 if size >= 128 else 11)
    label_height = 22
    gap = 10
    images = []
    for _, rgb in tiles:
        image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        if max(image.size) > size:
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
        images.append(image)
    cell_w = max(60, max(image.width for image in images))
    cell_h = max(image.height for image in images)
    top = MARGIN + (24 if title else 0)
    width = 2 * MARGIN + columns * cell_w + (columns - 1) * gap
    height = top + rows * (cell_h + label_height) + (rows - 1) * gap + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        heading = _font(15)
        draw.text((MARGIN, MARGIN), _fit_text(draw, title, heading, width - 2 * MARGIN), fill=INK, font=heading)
    for index, ((label, _), image) in enumerate(zip(tiles, images)):
        r, c = divmod(index, columns)
        x = MARGIN + c * (cell_w + gap)
        y = top + r * (cell_h + label_height + gap)
        canvas.paste(image, (x + (cell_w - image.width) // 2, y + (cell_h - image.height) // 2))
        text = _fit_text(draw, label, font, cell_w)
        text_width = _text_width(draw, text, font)
        draw.text((x + (cell_w - text_width) // 2, y + cell_h + 4), text, fill=INK, font=font)
    return np.asarray(canvas)
