"""Kernels from outside the catalog: typed on the command line, or read from
the files other tools use.

================  ==========================================================
form              how it is read
================  ==========================================================
inline text       rows separated by ``;`` or new lines, values by spaces or
                  commas: ``"0 -1 0; -1 5 -1; 0 -1 0"``; fractions allowed
                  (``1/16``); ``[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]`` too.
                  Applied as written (true convolution, like the catalog).
ImageMagick       ``WxH[+X+Y]: v, v, v ...`` (``W:`` for W x W), values by
                  commas or spaces, ``nan`` or ``-`` for an element outside
                  the neighbourhood (0 here).  ImageMagick's ``Convolve``
                  is a true convolution with the origin at ``+X+Y``
                  (default ``(W-1)/2, (H-1)/2``): imgconv places that origin
                  at its centre, so results match ``-morphology Convolve``.
libvips ``.mat``  first line ``width height [scale [offset]]``, then the
                  rows.  libvips computes ``sum(pixel * mask) / scale +
                  offset`` without flipping (a correlation, origin at
                  ``(W/2, H/2)``): imgconv flips the mask, divides it by
                  ``scale`` and turns ``offset`` into a bias of
                  ``offset / 255`` of full scale (libvips's values are
                  8-bit units), so results match ``vips conv``.
CSV / text        any other file: rows of numbers separated by commas,
                  semicolons, spaces or tabs; ``#`` starts a comment.
                  Applied as written (true convolution).
NumPy ``.npy``    a 2-D array of real numbers (a 1-D array is one row),
                  applied as written, as ``scipy.ndimage.convolve`` would.
================  ==========================================================

The "impulse response" of a kernel (what a single bright pixel becomes) is the
kernel imgconv convolves with, element for element, centred on the pixel; for
libvips masks it is the mask as written, turned by 180 degrees.

This module imports only numpy, yaml and the standard library (never numba).
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
from dataclasses import dataclass

import numpy as np

from imgconv.choices import check_kernel_side
from imgconv.errors import CatalogError, KernelFileError, shorten
from imgconv.kernels.algebra import centre_on, sums_to_zero
from imgconv.kernels.types import Filter, Kernel

__all__ = [
    "LoadedKernel", "load_kernel", "read_kernel_file", "parse_inline_kernel", "looks_like_path",
    "read_regular_file", "KERNEL_FILE_EXTENSIONS", "MAX_FILE_BYTES",
]

#: Extensions that name a kernel file (others are read as CSV/whitespace text too).
KERNEL_FILE_EXTENSIONS = (".mat", ".npy", ".csv", ".txt", ".tsv", ".kernel")

#: The most bytes read from a kernel file (a 1025x1025 kernel as text is about 20 MB).
MAX_FILE_BYTES = 64 * 1024 * 1024

# ImageMagick's user kernel: "WxH+X+Y:" (H, +X+Y optional; flags @ < > rotate it).
# Possessive quantifiers: white space is never given back, so a long run of
# spaces without the ':' fails in linear time instead of backtracking (n^3).
_IM_HEADER = re.compile(
    r"\s*+(\d++)(?:\s*+[xX]\s*+(\d++))?+\s*+(?:([+-]\s*+\d++)\s*+([+-]\s*+\d++))?+\s*+([@<>^!]*+)\s*+:", re.ASCII
)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_VALUE = re.compile(rf"({_NUMBER})(?:\s*/\s*({_NUMBER}))?\Z")
_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True, eq=False)
class LoadedKernel:
    """A kernel from the command line or a file.

    ``matrix`` is what imgconv convolves with (its impulse response); ``written``
    the numbers as they stand in the source; ``bias`` a fraction of full scale
    added after filtering; ``notes`` say how ``written`` became ``matrix``.
    """

    matrix: np.ndarray
    written: np.ndarray
    format: str
    source: str
    bias: float = 0.0
    notes: tuple = ()

    def to_filter(self, *, normalize: bool = False, scale: float = 1.0, name: str | None = None) -> Filter:
        """The kernel as a one-kernel :class:`~imgconv.kernels.Filter`.

        Parameters
        ----------
        normalize : bool
            Divide the kernel by its sum (a CatalogError when it sums to 0).
        scale : float
            Multiply the kernel by this (after ``normalize``).
        name : str, optional
            The filter's name; by default the kernel's source.
        """
        matrix = self.matrix
        notes = list(self.notes)
        if normalize:
            if sums_to_zero(matrix):
                raise CatalogError(f"{self.source}: normalize=true, but the kernel sums to 0")
            total = float(matrix.sum())
            matrix = matrix / total
            notes.append(f"divided by its sum {total:g}")
        if scale != 1.0:
            matrix = matrix * scale
            notes.append(f"scaled by {scale:g}")
        rows, cols = matrix.shape
        description = f"{self.format} kernel {rows}x{cols}"
        if notes:
            description += " (" + "; ".join(notes) + ")"
        params = {}
        if normalize:
            params["normalize"] = True
        if scale != 1.0:
            params["scale"] = scale
        return Filter(
            name=name or self.source,
            description=description,
            params=params,
            kernels=(Kernel(matrix),),
            combine="single",
            bias=self.bias,
            out_range="clip",
        )


def _number(token, where):
    match = _VALUE.match(token)
    if not match:
        raise ValueError(f"{where}: {token!r} is not a number")
    value = float(match.group(1))
    if match.group(2) is not None:
        divisor = float(match.group(2))
        if divisor == 0:
            raise ValueError(f"{where}: {token!r} divides by zero")
        value /= divisor
    if not math.isfinite(value):
        raise ValueError(f"{where}: {token!r} is not a finite number")
    return value


def _rows_to_matrix(rows):
    """A list of lists of numbers as a 2-D float64 array; every row the same length."""
    if not rows:
        raise ValueError("no numbers found")
    width = len(rows[0])
    if width == 0:
        raise ValueError("row 1 holds no numbers")
    for number, row in enumerate(rows, 1):
        if len(row) != width:
            raise ValueError(f"row {number} has {len(row)} values, row 1 has {width}")
    matrix = np.array(rows, dtype=np.float64)
    check_kernel_side(matrix.shape)
    return matrix


def _matrix_rows(text, row_separators):
    """Rows of numbers from text: rows split by ``row_separators`` (a regex),
    values by commas and white space, ``#`` comments removed."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    rows = []
    for chunk in re.split(row_separators, "\n".join(lines)):
        chunk = chunk.strip().strip(",").strip()
        if not chunk:
            continue
        tokens = [t for t in _SPLIT.split(chunk) if t]
        rows.append([_number(t, f"row {len(rows) + 1}") for t in tokens])
    return rows


def _parse_plain(text):
    """Inline or CSV text: rows by ';' or new lines (or a nested list)."""
    stripped = text.strip()
    if stripped.startswith("[["):
        import yaml

        try:
            value = yaml.safe_load(stripped)
        except (yaml.YAMLError, RecursionError):  # RecursionError: thousands of nested brackets
            raise ValueError("a nested list must look like [[0, -1, 0], [-1, 5, -1]]") from None
        if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
            raise ValueError("a nested list must look like [[0, -1, 0], [-1, 5, -1]]")
        rows = []
        for number, row in enumerate(value, 1):
            converted = []
            for item in row:
                if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                    raise ValueError(f"row {number}: {item!r} is not a number")
                converted.append(_number(str(item), f"row {number}"))
            rows.append(converted)
        return _rows_to_matrix(rows)
    if stripped.startswith("[") and stripped.endswith("]"):
        stripped = stripped[1:-1]
    return _rows_to_matrix(_matrix_rows(stripped, r"[;\n]"))


def _parse_imagemagick(text):
    """ImageMagick's ``WxH+X+Y: values``: (matrix, written, notes)."""
    match = _IM_HEADER.match(text)
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) else width
    flags = match.group(5)
    if flags:
        raise ValueError(f"the rotation flags '{flags}' (kernel lists) are not supported; give one kernel")
    if width < 1 or height < 1:
        raise ValueError(f"the size {width}x{height} must be at least 1x1")
    check_kernel_side((height, width))
    if match.group(3) is not None:
        ox, oy = int(match.group(3).replace(" ", "")), int(match.group(4).replace(" ", ""))
        if not (0 <= ox < width and 0 <= oy < height):
            raise ValueError(f"the origin +{ox}+{oy} lies outside the {width}x{height} kernel")
        explicit = True
    else:
        ox, oy = (width - 1) // 2, (height - 1) // 2
        explicit = False
    body = text[match.end():]
    if ";" in body:
        raise ValueError("';' separates kernels in an ImageMagick kernel list; give one kernel")
    tokens = [t for t in _SPLIT.split(body.strip()) if t]
    if len(tokens) != width * height:
        raise ValueError(f"the header says {width}x{height} = {width * height} values, found {len(tokens)}")
    values = []
    excluded = 0
    for index, token in enumerate(tokens):
        if token.lower() in ("nan", "-"):
            values.append(0.0)
            excluded += 1
        else:
            values.append(_number(token, f"value {index + 1}"))
    written = np.array(values, dtype=np.float64).reshape(height, width)
    matrix = centre_on(written, (oy, ox))
    notes = []
    if excluded:
        notes.append(f"{excluded} excluded (nan) elements taken as 0")
    if explicit or matrix.shape != written.shape:
        notes.append(f"origin at column {ox}, row {oy}")
    return matrix, written, tuple(notes)


_VIPS_SPLIT = re.compile(r"[\s,\"]+")


def _parse_vips(text):
    """A libvips matrix file: (matrix, written, bias, notes)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError("empty file; a libvips matrix starts with 'width height [scale [offset]]'")
    header = [t for t in _VIPS_SPLIT.split(lines[0].strip()) if t]
    if len(header) not in (2, 3, 4):
        raise ValueError(f"the first line must be 'width height [scale [offset]]', got {lines[0].strip()!r}")
    try:
        width, height = int(header[0]), int(header[1])
    except ValueError:
        raise ValueError(f"width and height must be whole numbers, got {header[0]!r} and {header[1]!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be at least 1, got {width} and {height}")
    check_kernel_side((height, width))
    scale = _number(header[2], "scale") if len(header) > 2 else 1.0
    offset = _number(header[3], "offset") if len(header) > 3 else 0.0
    if scale == 0:
        raise ValueError("scale must not be 0")
    body = lines[1:]
    if len(body) < height:
        raise ValueError(f"the header says {height} rows, found {len(body)}")
    if len(body) > height:
        raise ValueError(f"the header says {height} rows, found {len(body)} (line {height + 2} is extra)")
    rows = []
    for number, line in enumerate(body, 1):
        tokens = [t for t in _VIPS_SPLIT.split(line.strip()) if t]
        if len(tokens) != width:
            raise ValueError(f"row {number} has {len(tokens)} values, the header says width {width}")
        rows.append([_number(t, f"row {number}") for t in tokens])
    written = np.array(rows, dtype=np.float64)
    # libvips correlates, with the mask's origin at (width // 2, height // 2):
    # turned by 180 degrees, that origin sits at (width - 1 - width // 2, ...).
    flipped = written[::-1, ::-1] / scale
    matrix = centre_on(flipped, (height - 1 - height // 2, width - 1 - width // 2))
    notes = ["turned by 180 degrees: libvips correlates"]
    if scale != 1.0:
        notes.append(f"divided by scale {scale:g}")
    bias = offset / 255.0
    if offset:
        notes.append(f"offset {offset:g} = bias {bias:.4g} of full scale")
    return matrix, written, bias, tuple(notes)


def read_regular_file(path: str, limit: int, what: str, error=KernelFileError, label: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Opened without blocking (a FIFO named as a file never hangs the tool) and
    checked with ``fstat`` on the open descriptor (a device reports size 0 to
    ``os.path.getsize`` and never ends); the cap is enforced on what is read,
    not on what the file system claims.  ``error`` is raised naming the file
    (as ``label``, when given).
    """
    shown = label or path
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise error(f"{shown}: cannot read {what}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{shown}: cannot read {what}: it is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{shown}: cannot read {what}: not a regular file (a device, FIFO or socket)")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"{shown}: cannot read {what}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if total > limit:
        raise error(f"{shown}: more than {limit} bytes is too large for a {what}")
    return b"".join(chunks)


def _load_npy(data, name):
    """A 2-D kernel from the bytes of a ``.npy`` file; the header is checked
    before any array is allocated (it may claim a shape the file cannot hold)."""
    from numpy.lib import format as npy_format

    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(stream, max_header_size=10000)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(stream, max_header_size=10000)
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many kinds on untrusted bytes
        problem = "empty file" if not data else " ".join(str(exc).split())[:200] or type(exc).__name__
        raise KernelFileError(f"{name}: not a plain .npy array ({problem})") from exc
    if dtype.hasobject:
        raise KernelFileError(f"{name}: not a plain .npy array (it holds Python objects)")
    if dtype.kind not in "biuf":
        raise KernelFileError(f"{name}: the array holds {dtype}, not real numbers")
    if len(shape) not in (1, 2) or 0 in shape:
        raise KernelFileError(f"{name}: a kernel must be a non-empty 2-D array, got shape {shape}")
    try:
        check_kernel_side(shape if len(shape) == 2 else (1, shape[0]))
    except ValueError as exc:
        raise KernelFileError(f"{name}: {exc}") from exc
    if len(data) - stream.tell() < math.prod(shape) * dtype.itemsize:
        raise KernelFileError(f"{name}: the header says shape {shape} of {dtype}, but the file is shorter")
    try:
        array = npy_format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise KernelFileError(f"{name}: not a plain .npy array ({' '.join(str(exc).split())[:200]})") from exc
    if array.ndim == 1:
        array = array[None, :]
    matrix = array.astype(np.float64)
    if not np.all(np.isfinite(matrix)):
        raise KernelFileError(f"{name}: the array holds NaN or infinite values")
    return matrix


def _is_imagemagick(text):
    return _IM_HEADER.match(text) is not None


def read_kernel_file(path: str | os.PathLike) -> LoadedKernel:
    """Read a kernel file: ``.npy``, libvips ``.mat``, or text (ImageMagick's
    ``WxH:`` form when it starts that way, else CSV/whitespace rows).

    Parameters
    ----------
    path : str or path-like
        The file; its extension chooses ``.npy`` or libvips ``.mat``.

    Returns
    -------
    LoadedKernel

    Raises
    ------
    KernelFileError
        Naming the file and what is wrong with it.
    """
    name = os.fsdecode(os.fspath(path))
    extension = os.path.splitext(name)[1].lower()
    data = read_regular_file(name, MAX_FILE_BYTES, "kernel file")
    if extension == ".npy":
        matrix = _load_npy(data, name)
        return LoadedKernel(matrix, matrix, "NumPy .npy", name)
    if data.startswith(b"\x93NUMPY"):
        raise KernelFileError(f"{name}: a NumPy array file needs the .npy extension")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KernelFileError(f"{name}: not a text kernel file (not UTF-8); binary kernels must be .npy") from None
    try:
        if extension == ".mat":
            matrix, written, bias, notes = _parse_vips(text)
            return LoadedKernel(matrix, written, "libvips .mat", name, bias, notes)
        if _is_imagemagick(text):
            matrix, written, notes = _parse_imagemagick(text)
            return LoadedKernel(matrix, written, "ImageMagick", name, 0.0, notes)
        matrix = _rows_to_matrix(_matrix_rows(text, r"[;\n]"))
        return LoadedKernel(matrix, matrix, "text", name)
    except ValueError as exc:
        raise KernelFileError(f"{name}: {exc}") from exc


def parse_inline_kernel(text: str, *, label: str | None = None) -> LoadedKernel:
    """A kernel typed on the command line: matrix text or ImageMagick's form.

    Parameters
    ----------
    text : str
        ``"0 -1 0; -1 5 -1; 0 -1 0"``, ``[[1, 2], [3, 4]]`` or ``"3x3: ..."``.
    label : str, optional
        How messages name the kernel; by default ``kernel '<text>'``.

    Returns
    -------
    LoadedKernel

    Raises
    ------
    CatalogError
        A usage mistake, naming the text and the problem.
    """
    shown = label or f"kernel {shorten(' '.join(str(text).split()))!r}"
    try:
        if _is_imagemagick(text):
            matrix, written, notes = _parse_imagemagick(text)
            return LoadedKernel(matrix, written, "ImageMagick", "inline", 0.0, notes)
        matrix = _parse_plain(text)
    except ValueError as exc:
        raise CatalogError(f"{shown}: {exc}") from exc
    return LoadedKernel(matrix, matrix, "inline", "inline")


def looks_like_path(text: str) -> bool:
    """Whether ``text`` is more likely a file name than numbers."""
    text = str(text).strip()
    if not text or any(c in text for c in ";\n") or re.search(r"\d\s+[-+\d.]", text):
        return False
    return "/" in text or os.sep in text or os.path.splitext(text)[1].lower() in KERNEL_FILE_EXTENSIONS


def load_kernel(spec: str | os.PathLike) -> LoadedKernel:
    """``spec`` as given to ``--kernel``: a kernel file when one exists by that
    name, else inline text.

    Raises
    ------
    CatalogError
        For bad inline text, or a name that looks like a file that does not exist.
    KernelFileError
        For a kernel file that cannot be read or parsed.
    """
    text = os.fsdecode(os.fspath(spec)) if not isinstance(spec, str) else spec
    if text.strip() and os.path.exists(text):
        return read_kernel_file(text)
    if looks_like_path(text):
        raise CatalogError(f"kernel file '{text}' not found")
    return parse_inline_kernel(text)
