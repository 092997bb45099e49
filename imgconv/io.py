"""Reading and writing image files: the only module that reads or writes files with
Pillow (``plot`` draws pictures with it, and hands them here to be written).

``read_image`` turns a file into an :class:`ImageData` (a writable numpy array in
one of a few canonical layouts, plus the metadata worth carrying along);
``write_image`` turns an array back into a file, atomically, keeping bit depth,
alpha and metadata wherever the output format can hold them and warning
(:class:`~imgconv.errors.ImgconvWarning`) wherever it cannot.

Canonical layouts of ``ImageData.pixels``
-----------------------------------------
=========  ===========  =========  =========================================
mode       shape        dtype      comes from (Pillow mode)
=========  ===========  =========  =========================================
``L``      (H, W)       uint8      L, 1
``LA``     (H, W, 2)    uint8      LA, La, L with a transparent colour
``RGB``    (H, W, 3)    uint8      RGB, P, CMYK, YCbCr, HSV, RGBX
``RGBA``   (H, W, 4)    uint8      RGBA, RGBa, PA, P with transparency
``I;16``   (H, W)       uint16     I;16, I;16L, I;16B, I;16N, I (0..65535)
``F``      (H, W)       float32    F, I with values outside 0..65535
=========  ===========  =========  =========================================

Policies (where Pillow or the format cannot do what was asked)
---------------------------------------------------------------
- Pillow has no 16-bit colour modes: 16-bit RGB(A) and grey+alpha files are
  decoded by Pillow at 8 bits (a warning says so), and 16-bit colour arrays are
  written at 8 bits (``round(v / 257)``, with a warning).  16-bit grey stays
  16-bit in PNG and TIFF.
- Mode ``I`` (32-bit integers, how some files hold 16-bit data) becomes uint16
  when every value is in 0..65535, else float32 (mode ``F``, with a warning:
  exact up to 2**24).
- float32 is written as float only to TIFF (grey); elsewhere it is clipped to
  [0, 1] and scaled to 16 bits (grey PNG) or 8 bits, with a warning.
- JPEG and BMP cannot hold alpha (Pillow does not read BMP alpha back): the
  alpha channel is dropped with a warning.  WebP has no grey: grey is written
  as RGB(A), losslessly, without a warning.
- GIF is written as a palette image: exactly when the image has at most 256
  colours (255 plus a transparent index when there is transparency), otherwise
  quantised (median cut, dithered) with a warning; alpha is thresholded at 128.
- JPEG is written at quality ``JPEG_QUALITY`` (Pillow's default 4:2:0 chroma
  subsampling); WebP losslessly; PNG and TIFF are lossless anyway (TIFF
  uncompressed, Pillow's default).
- dpi read from PNG and BMP (stored as whole dots per metre) is snapped to the
  whole number it approximates (72.009 -> 72).

Decompression bombs
-------------------
An image with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` is refused from its
header, before any pixel is decoded.  The environment variable
``IMGCONV_MAX_PIXELS`` replaces that limit (an integer; 0 means no limit).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import secrets
import stat
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgconv.choices import FILE_FORMATS
from imgconv.errors import ImageError, ImgconvWarning

__all__ = [
    "SUPPORTED_FORMATS",
    "ImageData",
    "output_format",
    "format_name",
    "STDIO",
    "is_image_path",
    "read_image",
    "write_image",
    "write_atomically",
    "temporary_files",
    "MAX_PIXELS_ENV",
    "JPEG_QUALITY",
]

SUPPORTED_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".gif": "GIF",
}

#: The path that means standard input (for read_image) or output (for write_image).
STDIO = "-"
STDIN_NAME = "<stdin>"
STDOUT_NAME = "<stdout>"

#: The environment variable that replaces Pillow's pixel-count limit (0: no limit).
MAX_PIXELS_ENV = "IMGCONV_MAX_PIXELS"

#: JPEG quality for written files (Pillow's default of 75 visibly degrades filtered output).
JPEG_QUALITY = 95

# The Pillow plugins read_image lets open a file.  Naming them keeps Pillow from
# trying every plugin it has (EPS would even start Ghostscript).  The JPEG
# plugin also opens MPO, the multi-picture JPEG of many cameras.
_READ_FORMATS = FILE_FORMATS

# Marks our temporary files, so that batch never mistakes a leftover for an input.
_TMP_MARK = ".imgconv-tmp"

# Exceptions Pillow raises for files it cannot parse or decode.  Pillow's plugins
# are not consistent (a broken header may raise SyntaxError, struct.error,
# IndexError...), but each of these, raised from inside a Pillow call on file
# data, means "bad file", not "bug in imgconv".
_PILLOW_FILE_ERRORS = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)

# Pillow parses EXIF lazily, and a damaged IFD surfaces later as whatever its
# tag code trips over (KeyError from the mapping, AttributeError or TypeError
# when a tag has the wrong type).  Only code that does nothing but hand
# metadata from a file to Pillow catches these, and it says what it dropped.
_PILLOW_METADATA_ERRORS = _PILLOW_FILE_ERRORS + (KeyError, IndexError, AttributeError, TypeError)

# TIFF tags that describe the pixel layout of the file they are in: copied into
# another file's EXIF they would describe the wrong pixels (or none).
_TIFF_LAYOUT_TAGS = frozenset(
    {
        254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279,
        280, 281, 282, 283, 284, 290, 291, 292, 293, 296, 297, 301, 317, 318, 319,
        320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347,
        512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531, 532,
        700,  # XMP: carried separately
        33723,  # IPTC
        34377,  # Photoshop resources
        34675,  # ICC profile: carried separately
    }
)
_TIFF_XMP_TAG = 700
_ORIENTATION = 0x0112

# Pillow's JPEG writer refuses EXIF or XMP segments larger than one marker.
_JPEG_MAX_EXIF = 65533
_JPEG_MAX_XMP = 65533 - 29

_GREY_MODES = ("L", "LA", "I;16", "F")
_ICC_SPACES = {b"GRAY": "grey", b"RGB ": "RGB"}


@dataclass(eq=False)
class ImageData:
    """An image read from a file: its pixels and the metadata worth carrying along.

    Attributes
    ----------
    pixels : numpy.ndarray
        (H, W) or (H, W, C) with C in {2 (grey + alpha), 3 (RGB), 4 (RGBA)};
        dtype uint8, uint16 (16-bit grey) or float32; C-contiguous and writable.
    mode : {'L', 'LA', 'RGB', 'RGBA', 'I;16', 'F'}
        The Pillow mode the pixels correspond to, after expansion (palette to
        RGB/RGBA, 1-bit to L, CMYK to RGB, ...).
    has_alpha : bool
        True when the last channel is alpha (modes LA and RGBA).
    format : str or None
        The source format as Pillow names it, e.g. ``"PNG"``, ``"JPEG"``.
    exif : bytes or None
        Raw EXIF, always starting with ``b"Exif\\x00\\x00"``; never applied to
        the pixels (an Orientation tag is kept as is).
    icc_profile : bytes or None
        The embedded ICC colour profile.
    xmp : bytes or None
        The XMP packet (UTF-8 XML).
    dpi : tuple of float or None
        Horizontal and vertical resolution in dots per inch (PNG and BMP values
        snapped to the whole number they approximate, others rounded to 0.01).
    """

    pixels: np.ndarray
    mode: str
    has_alpha: bool
    format: str | None = None
    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None

    def __repr__(self):
        present = [name for name in ("exif", "icc_profile", "xmp") if getattr(self, name)]
        return (
            f"ImageData(shape={self.pixels.shape}, dtype={self.pixels.dtype}, mode={self.mode!r}, "
            f"has_alpha={self.has_alpha}, format={self.format!r}, dpi={self.dpi}, "
            f"metadata={present})"
        )


# ---------------------------------------------------------------------------
# paths and formats


def _name(path):
    """The path as text, for messages."""
    return os.fsdecode(os.fspath(path))


def _extensions_hint():
    return ", ".join(sorted(SUPPORTED_FORMATS))


def output_format(path) -> str:
    """The Pillow format to write ``path`` in, from its extension.

    Call it before doing any work, so that a bad output name fails at once.

    Parameters
    ----------
    path : str or os.PathLike
        The output file name.

    Returns
    -------
    str
        A Pillow format name: one of the values of ``SUPPORTED_FORMATS``.

    Raises
    ------
    ImageError
        When the extension is missing or not one of ``SUPPORTED_FORMATS``.
    """
    name = _name(path)
    ext = os.path.splitext(name)[1]
    try:
        return SUPPORTED_FORMATS[ext.lower()]
    except KeyError:
        pass
    if not ext:
        raise ImageError(f"cannot write '{name}': no file extension to choose the format by (use one of {_extensions_hint()})")
    raise ImageError(f"cannot write '{name}': unknown output extension '{ext}' (use one of {_extensions_hint()})")


def is_image_path(path) -> bool:
    """Whether ``path`` names an image imgconv can read, by its extension.

    The test is case-insensitive and does not touch the file.  imgconv's own
    temporary files (left behind only by a crash) are not images.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
    """
    name = os.path.basename(_name(path))
    if _TMP_MARK in name:
        return False
    return os.path.splitext(name)[1].lower() in SUPPORTED_FORMATS


# ---------------------------------------------------------------------------
# the pixel-count limit


def _pixel_limit():
    """The largest pixel count read_image accepts, or None for no limit."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        limit = Image.MAX_IMAGE_PIXELS
        return None if limit is None else int(limit)
    try:
        limit = int(raw.strip())
    except ValueError:
        limit = -1
    if limit < 0:
        raise ImageError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, or 0 for no limit; got {raw!r}")
    return limit or None


# Pillow applies its own limit inside Image.open (and again in some loaders) from
# the module-global MAX_IMAGE_PIXELS.  read_image applies the limit itself, with
# a better message and IMGCONV_MAX_PIXELS honoured, so it switches Pillow's off
# around those calls; the lock keeps concurrent reads from restoring each
# other's values.
_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_limit_off():
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield saved
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _refuse_bomb(name, size, limit):
    width, height = size
    pixels = width * height
    if limit is not None and pixels > limit:
        raise ImageError(
            f"cannot read '{name}': {width}x{height} = {pixels} pixels exceeds the limit of {limit} "
            f"(a guard against decompression bombs); set {MAX_PIXELS_ENV} to a larger number, "
            f"or 0 for no limit, to read it"
        )


# ---------------------------------------------------------------------------
# reading


def _open_error(name, exc):
    """An ImageError for an exception raised while opening ``name``."""
    if isinstance(exc, FileNotFoundError):
        return ImageError(f"cannot read '{name}': no such file")
    if isinstance(exc, IsADirectoryError):
        return ImageError(f"cannot read '{name}': is a directory")
    if isinstance(exc, PermissionError):
        return ImageError(f"cannot read '{name}': permission denied")
    if isinstance(exc, UnidentifiedImageError):
        return ImageError(f"cannot read '{name}': not a recognised image file (PNG, JPEG, TIFF, BMP, WebP or GIF)")
    if isinstance(exc, OSError) and exc.strerror:
        return ImageError(f"cannot read '{name}': {exc.strerror}")
    return ImageError(f"cannot read '{name}': not a readable image ({_one_line(exc)})")


def _one_line(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def _source_rawmode(im):
    """How the file stores its pixels (e.g. "RGB;16B"), from the first tile; "" if unknown."""
    try:
        args = im.tile[0][3]  # (codec, extents, offset, args): a plain tuple before Pillow 11
    except (IndexError, TypeError):
        return ""
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def read_image(path) -> ImageData:
    """Read an image file into memory, completely.

    The file is decoded in full here (so a truncated file fails here, not later)
    and closed before returning: writing the result over the same path is safe.
    Only the first frame of an animation is read.

    Parameters
    ----------
    path : str or os.PathLike
        A PNG, JPEG, TIFF, BMP, WebP or GIF file (recognised by content), or
        ``"-"`` (``STDIO``) for the whole of standard input.

    Returns
    -------
    ImageData
        See the module documentation for the layouts.

    Raises
    ------
    ImageError
        For a missing file, a directory, a file that cannot be opened, a file
        that is not one of the supported formats, a truncated or corrupt file,
        a pixel mode imgconv cannot represent, an image larger than the pixel
        limit, or a bad ``IMGCONV_MAX_PIXELS``.

    Warns
    -----
    ImgconvWarning
        When the pixels read lose something the file holds (16-bit colour
        decoded at 8 bits, 32-bit integers read as float, CMYK converted to RGB
        without a usable ICC profile).
    """
    if isinstance(path, str) and path == STDIO:
        return _read_stdin(_pixel_limit())
    name = _name(path)
    limit = _pixel_limit()
    # A directory gives PermissionError rather than IsADirectoryError on some systems.
    if os.path.isdir(path):
        raise ImageError(f"cannot read '{name}': is a directory")

    # imgconv opens the file itself: its errors are plain OSErrors, and Pillow,
    # given no file name, does not memory-map the file (its mapping ignores
    # the TIFF Orientation swap of width and height).
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise _open_error(name, exc) from exc
    with stream:
        return _read_stream(name, stream, limit)


def _read_stdin(limit):
    name = STDIN_NAME
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise ImageError(f"cannot read '{name}': standard input is not open")
    try:
        data = stream.read()
    except OSError as exc:
        raise _open_error(name, exc) from exc
    if not data:
        raise ImageError(f"cannot read '{name}': no data on standard input")
    return _read_stream(name, io.BytesIO(data), limit)


def _read_stream(name, stream, limit):
    try:
        with _pillow_limit_off():
            im = Image.open(stream, formats=_READ_FORMATS)
    except _PILLOW_FILE_ERRORS as exc:
        raise _open_error(name, exc) from exc

    with im:
        _refuse_bomb(name, im.size, limit)
        rawmode = _source_rawmode(im)
        # TIFF metadata is all in the header, and must be taken before loading:
        # Pillow's TIFF loader rotates the pixels by the EXIF Orientation and
        # strips the tag (from XMP too); imgconv keeps pixels and EXIF as stored.
        metadata = orientation = None
        if im.format == "TIFF":
            metadata = _metadata_or_warn(name, im)
            orientation = _pillow_orientation(im)
        try:
            pillow_limit = Image.MAX_IMAGE_PIXELS
            if pillow_limit is not None and im.width * im.height > pillow_limit:
                # Allowed by IMGCONV_MAX_PIXELS: keep Pillow's loaders from refusing it.
                with _pillow_limit_off():
                    im.load()
            else:
                im.load()
        except _PILLOW_FILE_ERRORS as exc:
            raise ImageError(f"cannot read '{name}': truncated or corrupt image data ({_one_line(exc)})") from exc
        source_format = "JPEG" if im.format == "MPO" else im.format
        if orientation in _UNDO_ORIENTATION and _ORIENTATION not in im.getexif():
            im = im.transpose(_UNDO_ORIENTATION[orientation])  # Pillow applied it: undo
        if metadata is None:
            metadata = _metadata_or_warn(name, im)  # PNG may keep EXIF after the pixels
        try:
            pixels, mode, notes = _canonical_pixels(im, rawmode, metadata)
        except (ValueError, OSError) as exc:
            raise ImageError(f"cannot read '{name}': unsupported pixel mode {im.mode} ({_one_line(exc)})") from exc

    for note in notes:
        warnings.warn(f"'{name}': {note}", ImgconvWarning, stacklevel=3)
    return ImageData(
        pixels=pixels,
        mode=mode,
        has_alpha=mode in ("LA", "RGBA"),
        format=source_format,
        **metadata,
    )


def _pillow_orientation(im):
    """The EXIF Orientation Pillow's TIFF loader will apply (it also looks in XMP)."""
    try:
        value = im.getexif().get(_ORIENTATION)
    except _PILLOW_METADATA_ERRORS:
        return None  # then loading fails too, and says so
    return value if isinstance(value, int) else None


def _metadata_or_warn(name, im):
    try:
        return _read_metadata(im)
    except _PILLOW_METADATA_ERRORS as exc:
        # Broken metadata should not cost the user the image.
        warnings.warn(f"'{name}': unreadable metadata ignored ({_one_line(exc)})", ImgconvWarning, stacklevel=4)
        return {"exif": None, "icc_profile": None, "xmp": None, "dpi": None}


def _as_bytes(value):
    """Metadata as bytes (Pillow gives str for PNG text, a tuple of ints for some TIFF tags)."""
    if not value:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    try:
        return bytes(value)
    except (TypeError, ValueError):
        return None  # a damaged tag: not metadata worth carrying


def _read_metadata(im):
    """EXIF, ICC profile, XMP and dpi of an opened image (loaded, except a TIFF)."""
    info = im.info
    exif = info.get("exif")
    if exif is None and im.format == "TIFF":
        exif = _exif_of_tiff(im)
    exif = _as_bytes(exif)
    if exif is not None and not exif.startswith(b"Exif\x00\x00"):
        exif = b"Exif\x00\x00" + exif  # WebP stores it bare; keep one form
    dpi = info.get("dpi")
    if dpi is not None:
        try:
            dpi = (_tidy_dpi(dpi[0]), _tidy_dpi(dpi[1]))
        except (TypeError, ValueError, IndexError, OverflowError):
            dpi = None
        if dpi is not None and not _valid_dpi(dpi):
            dpi = None
    return {
        "exif": exif,
        "icc_profile": _as_bytes(info.get("icc_profile")),
        "xmp": _as_bytes(info.get("xmp")),
        "dpi": dpi,
    }


def _valid_dpi(dpi):
    # JPEG stores dpi in 16 bits; anything outside is a broken file, not a resolution.
    return all(np.isfinite(d) and 0 < d <= 65535 for d in dpi)


def _tidy_dpi(value):
    """``value`` as float, undoing the quantisation of PNG and BMP.

    Those formats store whole dots per metre (steps of 0.0254 dpi): 300 dpi reads
    back as 299.9994 and 72 dpi as 72.009.  A value within half a step of a
    whole number is taken to be that number; others are rounded to 0.01.
    """
    value = float(value)
    nearest = round(value)
    return float(nearest) if abs(value - nearest) <= 0.0127 else round(value, 2)


def _exif_of_tiff(im):
    """The descriptive tags of an opened, not yet loaded TIFF as EXIF bytes.

    A TIFF's first IFD is its EXIF, but it also describes the TIFF's own pixel
    layout; those tags are left out so that they cannot mislabel another file.
    """
    exif = Image.Exif()
    exif.load(im.getexif().tobytes())  # a copy, sub-IFDs included, read while the file is open
    for tag in list(exif):
        if tag in _TIFF_LAYOUT_TAGS:
            del exif[tag]
    if not len(exif):
        return None
    return exif.tobytes()


# Pillow's TIFF loader turns the pixels upright by the EXIF Orientation (2..8);
# these transpositions turn them back to the order stored in the file.
_UNDO_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _canonical_pixels(im, rawmode, metadata):
    """(pixels, mode, notes) in one of the canonical layouts, from a loaded image."""
    mode = im.mode
    notes = []
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        if "transparency" in im.info:
            notes.append("the transparent grey level of a 16-bit image is ignored")
        return _owned(np.array(im).astype(np.uint16, copy=False)), "I;16", notes
    if mode == "I":
        values = np.array(im)
        if values.size == 0 or (values.min() >= 0 and values.max() <= 65535):
            return _owned(values.astype(np.uint16)), "I;16", notes
        notes.append("32-bit integer pixels outside 0..65535 are read as 32-bit float (exact up to 16777216)")
        return _owned(values.astype(np.float32)), "F", notes
    if mode == "F":
        return _owned(np.array(im).astype(np.float32, copy=False)), "F", notes

    if ";16" in rawmode and mode in ("RGB", "RGBA"):
        what = "grey + alpha" if rawmode.startswith("LA") else rawmode.split(";")[0]
        notes.append(f"16-bit {what} is read as 8-bit (Pillow cannot decode 16-bit colour or grey + alpha)")
        if rawmode.startswith("LA"):
            mode, im = "LA", im.convert("LA")  # Pillow widened it to RGBA

    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info or (im.palette is not None and "A" in im.palette.mode)
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert(mode + "A")  # a transparent colour key becomes an alpha channel
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode == "CMYK":
        im = _cmyk_to_rgb(im, metadata, notes)
    elif mode in ("RGBX", "YCbCr", "HSV"):
        im = im.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError("no conversion to L, LA, RGB or RGBA")
    return _owned(np.array(im)), im.mode, notes


def _cmyk_to_rgb(im, metadata, notes):
    """CMYK converted through its ICC profile when it has one (then sRGB is its profile)."""
    profile = metadata.get("icc_profile")
    if profile is not None:
        try:
            from PIL import ImageCms

            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(profile)), srgb, outputMode="RGB")
        except (ImportError, OSError, ValueError, TypeError) as exc:
            # ImageCms.PyCMSError is an OSError
            notes.append(f"CMYK profile unusable ({_one_line(exc)}); converted to RGB without colour management")
        else:
            metadata["icc_profile"] = ImageCms.ImageCmsProfile(srgb).tobytes()
            return converted
    else:
        notes.append("CMYK converted to RGB without colour management (no ICC profile)")
    metadata["icc_profile"] = None  # a CMYK profile cannot describe RGB pixels
    return im.convert("RGB")


def _owned(array):
    """C-contiguous, writable, native byte order: one canonical array for the kernels."""
    array = np.ascontiguousarray(array)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.writeable:
        array = array.copy()
    return array


# ---------------------------------------------------------------------------
# writing


def _check_pixels(pixels):
    """The array to write, validated: (H, W) or (H, W, C) with C in 1..4."""
    if not isinstance(pixels, np.ndarray):
        raise ValueError(f"pixels must be a numpy array, got {type(pixels).__name__}")
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"pixels must have dtype uint8, uint16 or float32, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (2, 3, 4)):
        raise ValueError(f"pixels must have shape (H, W) or (H, W, C) with C in 2, 3, 4; got {pixels.shape}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"pixels must not be empty, got shape {pixels.shape}")
    return pixels


def _channels(array):
    return 1 if array.ndim == 2 else array.shape[2]


_LAYOUT_NAMES = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}


def _to_8bit(array):
    # round(v / 257) without floats: exact for every uint16 (no ties are possible).
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_to_int(array, dtype):
    """Clip to [0, 1] (NaN to 0) and scale to the range of ``dtype``; also the clipped count."""
    outside = int(np.count_nonzero(~(array >= 0) | (array > 1)))  # NaN and infinities too
    finite = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    top = np.iinfo(dtype).max
    scaled = np.rint(np.clip(finite, 0.0, 1.0).astype(np.float64) * top)
    return scaled.astype(dtype), outside


def _fit_depth(fmt, array, warn):
    """Bring the samples to a depth that ``fmt`` holds and Pillow writes."""
    channels = _channels(array)
    if array.dtype == np.uint8:
        return array
    layout = _LAYOUT_NAMES[channels]
    if array.dtype == np.uint16:
        if channels == 1 and fmt in ("PNG", "TIFF"):
            return array
        if fmt in ("PNG", "TIFF"):
            warn(f"Pillow cannot write 16-bit {layout}; written as 8-bit (value / 257, rounded)")
        else:
            warn(f"{fmt} cannot hold 16-bit samples; written as 8-bit (value / 257, rounded)")
        return _to_8bit(array)
    # float32
    if channels == 1 and fmt == "TIFF":
        return array
    if channels == 1 and fmt == "PNG":
        target, bits = np.uint16, 16
    else:
        target, bits = np.uint8, 8
    converted, outside = _float_to_int(array, target)
    why = f"{fmt} cannot hold floating-point samples" if fmt != "TIFF" else f"Pillow cannot write floating-point {layout}"
    clipped = f"; {outside} values outside [0, 1] were clipped" if outside else ""
    warn(f"{why}; written as {bits}-bit (scaled from [0, 1]){clipped}")
    return converted


def _fit_channels(fmt, array, warn):
    """Bring the channel layout to one ``fmt`` holds (GIF is handled by _to_palette)."""
    channels = _channels(array)
    if fmt in ("JPEG", "BMP") and channels in (2, 4):
        warn(f"{fmt} cannot hold transparency; the alpha channel was dropped")
        return array[..., 0] if channels == 2 else array[..., :3]
    if fmt == "WEBP" and channels in (1, 2):
        # WebP has no grey: the same pixels as RGB(A), nothing lost.
        grey = array if channels == 1 else array[..., 0]
        planes = [grey, grey, grey] + ([array[..., 1]] if channels == 2 else [])
        return np.stack(planes, axis=-1)
    return array


def _to_palette(array, warn):
    """A GIF-ready image ("L" or "P") and its save parameters."""
    channels = _channels(array)
    if channels == 1:
        # Pillow writes grey as a palette of the 256 grey levels; unoptimised, that
        # palette stays the plain ramp, which reads back as grey ("L") rather than "P".
        return Image.fromarray(np.ascontiguousarray(array)), {"optimize": False}
    if channels == 2:
        grey = array[..., 0]
        array = np.stack([grey, grey, grey, array[..., 1]], axis=-1)
    rgb = array[..., :3]
    transparent = None
    if array.shape[2] == 4:
        alpha = array[..., 3]
        if np.any((alpha != 0) & (alpha != 255)):
            warn("GIF transparency is on or off; partial alpha was thresholded at 128")
        transparent = alpha < 128
        if not transparent.any():
            transparent = None
    limit = 256 if transparent is None else 255
    key = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    visible = key if transparent is None else key[~transparent]
    colours, inverse = np.unique(visible, return_inverse=True)
    if len(colours) <= limit:
        index = np.zeros(key.shape, np.uint8)
        if transparent is None:
            index[...] = inverse.reshape(key.shape)
        else:
            index[~transparent] = inverse.ravel()
        palette = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=-1)
        palette = palette.astype(np.uint8).ravel().tolist()
    else:
        warn(f"GIF holds at most {limit} colours; {len(colours)} colours were quantised (median cut, dithered)")
        quantised = Image.fromarray(np.ascontiguousarray(rgb)).quantize(colors=limit)
        index = np.array(quantised)
        palette = quantised.getpalette()[: 3 * limit]
    params = {}
    if transparent is not None:
        index[transparent] = 255
        params["transparency"] = 255
    palette = palette + [0] * (768 - len(palette))
    image = Image.fromarray(np.ascontiguousarray(index))
    image.putpalette(palette)  # turns the "L" index image into "P"
    return image, params


def _icc_space(profile):
    """'grey', 'RGB', another colour-space signature, or None for a malformed profile."""
    if len(profile) < 128:
        return None
    signature = bytes(profile[16:20])
    return _ICC_SPACES.get(signature, signature.decode("latin-1").strip() or None)


_METADATA_ABILITY = {
    # format: (exif, icc, xmp, dpi)
    "PNG": (True, True, True, True),
    "JPEG": (True, True, True, True),
    "TIFF": (True, True, True, True),
    "WEBP": (True, True, True, False),
    "BMP": (False, False, False, True),
    "GIF": (False, False, False, False),
}


def _metadata_params(fmt, mode, like, warn):
    """Pillow save parameters carrying ``like``'s metadata into a ``fmt`` file of ``mode``."""
    if like is None:
        return {}
    exif, icc, xmp, dpi = like.exif, like.icc_profile, like.xmp, like.dpi
    can_exif, can_icc, can_xmp, can_dpi = _METADATA_ABILITY[fmt]

    if icc and can_icc:
        space = _icc_space(icc)
        wanted = "grey" if mode in _GREY_MODES else "RGB"
        if space != wanted:
            found = "a malformed ICC profile" if space is None else f"the {space} ICC profile"
            warn(f"{found} does not fit the {wanted} output; it was dropped")
            icc = None
    if fmt == "JPEG":
        if exif and len(exif) > _JPEG_MAX_EXIF:
            warn(f"EXIF of {len(exif)} bytes does not fit a JPEG segment; it was dropped")
            exif = None
        if xmp and len(xmp) > _JPEG_MAX_XMP:
            warn(f"XMP of {len(xmp)} bytes does not fit a JPEG segment; it was dropped")
            xmp = None

    lost = [what for what, value, can in (("EXIF", exif, can_exif), ("ICC profile", icc, can_icc), ("XMP", xmp, can_xmp)) if value and not can]
    if lost:
        warn(f"{fmt} cannot hold the {', '.join(lost)} of the input; not written")

    params = {}
    if icc and can_icc:
        params["icc_profile"] = icc
    if dpi and can_dpi and _valid_dpi(dpi):
        params["dpi"] = tuple(float(d) for d in dpi)
    if fmt == "TIFF":
        # Pillow's TIFF writer takes EXIF tags into the file's own IFD; XMP is tag 700 there.
        tags = _tiff_tags(exif if can_exif else None, xmp, warn)
        if tags is not None:
            params["exif"] = tags
        return params
    if exif and can_exif:
        params["exif"] = exif
    if xmp and can_xmp:
        if fmt == "PNG":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp)
            params["pnginfo"] = info
        else:
            params["xmp"] = xmp
    return params


def _tiff_tags(exif, xmp, warn):
    tags = Image.Exif()
    if exif:
        try:
            tags.load(exif)
            for tag in list(tags):
                if tag in _TIFF_LAYOUT_TAGS:
                    del tags[tag]
            # Read the sub-IFDs now, while the bytes they point into are at hand,
            # and serialise once: a damaged tag fails here, not inside the save.
            for sub in (0x8769, 0x8825):
                if sub in tags:
                    tags.get_ifd(sub)
            tags.tobytes()
        except _PILLOW_METADATA_ERRORS as exc:
            warn(f"unreadable EXIF was not written ({_one_line(exc)})")
            tags = Image.Exif()
        else:
            if not len(tags):
                warn("the EXIF holds no readable tags; not written")
    if xmp:
        tags[_TIFF_XMP_TAG] = xmp
    return tags if len(tags) else None


def _format_params(fmt):
    if fmt == "JPEG":
        return {"quality": JPEG_QUALITY}
    if fmt == "WEBP":
        # Lossless, and exact: keep the colour under fully transparent pixels.
        # For lossless WebP, quality is encoder effort: 25 with method 1 gives
        # files as small as the default (80, 4) in about a third of the time.
        return {"lossless": True, "exact": True, "quality": 25, "method": 1}
    return {}


def format_name(text) -> str:
    """The Pillow format for a name given by a user: ``png``, ``JPG``,
    ``.tiff``, ``WebP``... (an extension in ``SUPPORTED_FORMATS`` or a Pillow
    format name); ImageError for anything else."""
    key = str(text).strip().lower()
    if not key.startswith("."):
        key = "." + key
    if key in SUPPORTED_FORMATS:
        return SUPPORTED_FORMATS[key]
    names = sorted({ext.lstrip(".") for ext in SUPPORTED_FORMATS})
    raise ImageError(f"unknown image format '{text}' (use one of {', '.join(names)})")


def write_image(path, pixels, *, like: ImageData | None = None, format: str | None = None) -> None:
    """Write ``pixels`` to ``path``, atomically, in the format its extension names.

    The file is written to a temporary file in the same folder (a hidden name
    containing ``.imgconv-tmp``) and moved onto ``path`` only once complete, so
    a failure never leaves a partial output, and ``path`` may be the file the
    pixels were read from.

    Parameters
    ----------
    path : str or os.PathLike
        The output file; its folder must exist.  Its extension chooses the
        format (see ``SUPPORTED_FORMATS``).
    pixels : numpy.ndarray
        (H, W) grey or (H, W, C) with C = 2 (grey + alpha), 3 (RGB) or 4 (RGBA);
        dtype uint8, uint16 or float32 (the values are written as they are:
        convert and round before calling).  The layout decides the mode.
    like : ImageData, optional
        The image read from the input: its EXIF, ICC profile, XMP and dpi are
        written where the format can hold them.
    format : str, optional
        The format (``"png"``, ``"jpg"``, ...; see :func:`format_name`) instead
        of the one ``path``'s extension names.  Required when ``path`` is
        ``"-"`` (``STDIO``): the image is then encoded completely and written
        to standard output in one piece.

    Raises
    ------
    ImageError
        For an unknown extension, a missing output folder, a path that is a
        directory, or a failure to write (permission, full disk, encoder error).
    ValueError
        For ``pixels`` of a dtype or shape other than the above.

    Warns
    -----
    ImgconvWarning
        For each thing the output cannot keep: bit depth, floating point,
        alpha, colours beyond a GIF palette, metadata, an ICC profile for the
        wrong colour space.
    """
    to_stdout = isinstance(path, str) and path == STDIO
    if to_stdout and format is None:
        raise ImageError("cannot write to standard output without a format (png, jpg, tif, ...)")
    name = STDOUT_NAME if to_stdout else _name(path)
    fmt = format_name(format) if format is not None else output_format(path)
    pixels = _check_pixels(pixels)
    if to_stdout:
        _write_stdout(pixels, fmt, like)
        return
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(folder):
        shown = os.path.dirname(name) or folder
        if os.path.exists(folder):
            raise ImageError(f"cannot write '{name}': '{shown}' is not a folder")
        raise ImageError(f"cannot write '{name}': folder '{shown}' does not exist")
    if os.path.isdir(name):
        raise ImageError(f"cannot write '{name}': is a directory")

    notes = []  # what the output could not keep: reported once the file is written
    image, params = _encode(pixels, fmt, like, notes.append)
    _save_atomically(name, image, fmt, params)
    for note in notes:
        warnings.warn(f"'{name}': {note}", ImgconvWarning, stacklevel=2)


def _encode(pixels, fmt, like, warn):
    """A Pillow image ready to save as ``fmt``, and its save parameters."""
    array = _fit_depth(fmt, pixels, warn)
    if fmt == "GIF":
        image, params = _to_palette(array, warn)
    else:
        array = _fit_channels(fmt, array, warn)
        image = Image.fromarray(_owned(array))
        params = {}
    params.update(_format_params(fmt))
    params.update(_metadata_params(fmt, image.mode, like, warn))
    return image, params


def _write_stdout(pixels, fmt, like):
    name = STDOUT_NAME
    notes = []
    image, params = _encode(pixels, fmt, like, notes.append)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **params)
    except (OSError, ValueError, OverflowError, SyntaxError, struct.error, zlib.error) as exc:
        raise ImageError(f"cannot write '{name}': {_one_line(exc)}") from exc
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:
        raise ImageError(f"cannot write '{name}': standard output is not open")
    try:
        stream.write(buffer.getvalue())
        stream.flush()
    except OSError as exc:
        raise ImageError(f"cannot write '{name}': {exc.strerror or _one_line(exc)}") from exc
    for note in notes:
        warnings.warn(f"'{name}': {note}", ImgconvWarning, stacklevel=3)


def _save_atomically(name, image, fmt, params):
    """Encode ``image`` into ``name`` through :func:`write_atomically`; ImageError on failure."""
    try:
        write_atomically(name, lambda stream: image.save(stream, format=fmt, **params))
    except PermissionError:
        raise ImageError(f"cannot write '{name}': permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot write '{name}': {exc.strerror or _one_line(exc)}") from exc
    except (ValueError, OverflowError, SyntaxError, struct.error, zlib.error) as exc:
        # Pillow's encoders report bad parameters or metadata this way.
        raise ImageError(f"cannot write '{name}': {_one_line(exc)}") from exc


def write_atomically(path, write: Callable[[BinaryIO], object]) -> None:
    """Write the file ``path`` through ``write(stream)``, all or nothing.

    ``write`` is given a binary stream on a new temporary file in ``path``'s
    folder, created with ``O_EXCL`` under a random hidden name that contains
    ``.imgconv-tmp`` and ends in ``path``'s extension (so it never follows or
    clobbers anyone's file, and :func:`temporary_files` finds it).  Once
    ``write`` returns, the data is flushed and fsynced, the file takes the
    permissions of the ``path`` it replaces (a new file gets the umask's) and
    is renamed onto ``path``.  Readers of ``path`` see the old file or the
    complete new one, never a part, even after a crash.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.
    write : callable
        Called once with the open binary stream; it writes the whole content.

    Raises
    ------
    OSError
        From the file system (no folder, permission, full disk).  Whatever
        ``write`` raises propagates too.  The temporary file is removed in
        every case.
    """
    name = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(name))
    base, ext = os.path.splitext(os.path.basename(name))
    try:
        keep_mode = stat.S_IMODE(os.stat(name).st_mode)
    except OSError:
        keep_mode = None  # a new file: the umask decides, as for any new file
    # O_EXCL with a random name: never follow or clobber someone else's file;
    # 0o666 lets the umask apply (mkstemp would make it private, 0o600).
    for _ in range(100):
        temp = os.path.join(folder, f".{base}{_TMP_MARK}-{secrets.token_hex(4)}{ext}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free temporary name in '{folder}'")
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())  # the data is on disk before the name points at it
        if keep_mode is not None:
            os.chmod(temp, keep_mode)
        os.replace(temp, name)
        temp = None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.remove(temp)


def temporary_files(path) -> list[Path]:
    """The temporary files :func:`write_atomically` may have left for ``path``
    (when its process was killed mid-write), to be removed."""
    path = Path(path)
    base, ext = os.path.splitext(path.name)
    return sorted(path.parent.glob(f".{glob.escape(base)}{_TMP_MARK}-*{glob.escape(ext)}"))
