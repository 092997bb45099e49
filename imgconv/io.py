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
``LA;16``  (H, W, 2)    uint16     16-bit grey + alpha PNG and TIFF (codec)
``RGB;16`` (H, W, 3)    uint16     16-bit RGB PNG and TIFF (codec)
``RGBA;16`` (H, W, 4)   uint16     16-bit RGBA PNG and TIFF, a 16-bit RGB PNG
                                   with a transparent colour (codec)
``F``      (H, W)       float32    F, I with values outside 0..65535
``LA;F``   (H, W, 2)    float32    32-bit float grey + alpha TIFF (codec)
``RGB;F``  (H, W, 3)    float32    32-bit float RGB TIFF (codec)
``RGBA;F`` (H, W, 4)    float32    32-bit float RGBA TIFF (codec)
=========  ===========  =========  =========================================

A mode names the layout, then the sample type after ``;`` (none: 8 bits);
``I;16`` and ``F`` are Pillow's names for 16-bit and float grey.  "(codec)":
Pillow cannot decode these exactly; :mod:`imgconv.codec` (libvips) decodes and
encodes their pixels, while Pillow still reads and writes their metadata.
16-bit samples are in 0..65535, float ones in 0..1 full scale (not clipped).

Policies (where Pillow or the format cannot do what was asked)
---------------------------------------------------------------
- 16-bit samples (grey, grey + alpha, RGB, RGBA) stay 16-bit in PNG and TIFF;
  the 8-bit formats (JPEG, WebP, BMP, GIF) get ``round(v / 257)`` with a
  warning: every conversion from 16 to 8 bits rounds.  A TIFF with associated
  (premultiplied) 16-bit or float alpha is read as straight alpha.  A 16-bit
  animated PNG is read frame by frame by Pillow, at 8 bits, with a warning.
- Mode ``I`` (32-bit integers, how some files hold 16-bit data) becomes uint16
  when every value is in 0..65535, else float32 (mode ``F``, with a warning:
  exact up to 2**24).
- float32 is written as float to TIFF (every layout); elsewhere it is clipped
  to [0, 1] and scaled to 16 bits (PNG) or 8 bits, with a warning.
- JPEG and BMP cannot hold alpha (Pillow does not read BMP alpha back): the
  alpha channel is dropped with a warning.  WebP has no grey: grey is written
  as RGB(A), losslessly, without a warning.
- GIF is written as a palette image: exactly when the image has at most 256
  colours (255 plus a transparent index when there is transparency), otherwise
  quantised (median cut, dithered) with a warning; alpha is thresholded at 128.
- Compression follows the input (:mod:`imgconv.filemeta`): a JPEG from a JPEG
  keeps its quantisation tables, chroma subsampling and progressive mode, any
  other JPEG gets quality ``JPEG_QUALITY`` with 4:4:4 chroma; WebP is lossless
  unless the input was lossy (a lossy WebP or a JPEG: lossy at the input's
  estimated quality); ``write_image(..., quality=Q)`` sets JPEG and WebP quality
  (WebP then lossy).  PNG and TIFF are lossless anyway (TIFF uncompressed,
  Pillow's default).
- Text (PNG tEXt/zTXt/iTXt, JPEG COM, GIF comment, TIFF ImageDescription,
  Artist, Software, Copyright) is kept where the output holds it, mapped
  between formats as :mod:`imgconv.filemeta` describes, with a warning for
  each entry it cannot hold.
- dpi read from PNG and BMP (stored as whole dots per metre) is snapped to the
  whole number it approximates (72.009 -> 72).
- Frames and pages: animations (GIF, APNG, WebP) are read as full canvases,
  composited as a viewer shows them, with their timing (:class:`Animation`);
  TIFF pages as they are (they may differ in size).  Every frame takes one
  layout (8-bit grey, colour and alpha widened exactly; a page that cannot
  join, with a warning, is left out).  GIF, PNG (APNG), WebP and TIFF write
  every frame (full frames, shown exactly: APNG blend source, GIF disposed to
  the background when transparent); JPEG and BMP the first, with a warning.
  The guard below counts every frame, before any after the first is decoded.

Decompression bombs
-------------------
An image is refused from its header, before any pixel is decoded, when reading
and filtering it would need more memory than the machine can spare
(:mod:`imgconv.memory`: its decoded layout, the filter's working copies, what
the platform reports as available, less a margin); any image that fits is
accepted, however many pixels it has.  The environment variable
``IMGCONV_MAX_PIXELS`` replaces the memory test by a pixel count (an integer;
0 means no limit).  Running out of memory while decoding anyway is one line
(an :class:`~imgconv.errors.ImageError`), never a MemoryError.

EXIF orientation
----------------
The Orientation tag is read into ``ImageData.orientation`` and kept in the EXIF;
the pixels stay as stored (Pillow's TIFF loader turns them: that is undone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import io
import logging
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

from imgconv import codec, filemeta, memory
from imgconv.choices import FILE_FORMATS
from imgconv.errors import ImageError, ImgconvWarning

# Pillow logs what it refuses in a damaged file (logger.error) and has no handler of
# its own, so Python's last-resort handler printed it beside imgconv's one-line
# error; the refusal itself reaches the user as that error.  An application that
# configures logging still gets Pillow's records.
logging.getLogger("PIL").addHandler(logging.NullHandler())

__all__ = [
    "SUPPORTED_FORMATS",
    "ImageData",
    "Animation",
    "MULTI_FRAME_FORMATS",
    "DEFAULT_FRAME_MS",
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

#: The environment variable that replaces the memory guard by a pixel count (0: no limit).
MAX_PIXELS_ENV = memory.MAX_PIXELS_ENV

#: JPEG quality for a JPEG written from an input that is not a JPEG (a JPEG input's
#: own tables are kept); defined, with the reason for it, in imgconv.filemeta.
JPEG_QUALITY = filemeta.JPEG_QUALITY

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

_GREY_MODES = ("L", "LA", "I;16", "F", "LA;16", "LA;F")
_ICC_SPACES = {b"GRAY": "grey", b"RGB ": "RGB"}

# Every canonical mode: (channels, dtype, has alpha): Pillow's, then the codec's
# (16-bit and float colour and grey + alpha).
_MODES = {
    "L": (1, np.uint8, False),
    "LA": (2, np.uint8, True),
    "RGB": (3, np.uint8, False),
    "RGBA": (4, np.uint8, True),
    "I;16": (1, np.uint16, False),
    "F": (1, np.float32, False),
    **codec.MODES,
}
_MODE_OF = {(channels, np.dtype(dtype)): mode for mode, (channels, dtype, _) in _MODES.items()}


@dataclass(frozen=True)
class Animation:
    """How the frames of an animation (GIF, APNG, animated WebP) are shown.

    The frames themselves are full canvases, composited as a viewer shows them
    (see :attr:`ImageData.more_frames`), so writing them back needs only the
    timing; the disposal and blend operations of the source are kept for
    reference.

    Attributes
    ----------
    durations : tuple of float
        How long each frame shows, in milliseconds, one per frame (the first
        included).
    loop : int or None
        How many times the animation plays, 0 for ever; None where the file
        does not say (a GIF without the looping extension plays once).
    disposals : tuple of int
        Each frame's disposal as stored (GIF: 0-3; APNG: 0 none, 1 background,
        2 previous); empty for WebP.
    blends : tuple of int
        Each APNG frame's blend operation (0 source, 1 over); empty otherwise.
    background : tuple of int or None
        The RGBA background colour a WebP animation declares.
    default_image : bool
        An APNG whose first image (``ImageData.pixels``) is shown only where
        animation is not supported, and is not one of the animation's frames;
        its entry in ``durations`` is 0.
    """

    durations: tuple[float, ...]
    loop: int | None = 0
    disposals: tuple[int, ...] = ()
    blends: tuple[int, ...] = ()
    background: tuple[int, int, int, int] | None = None
    default_image: bool = False


@dataclass(eq=False)
class ImageData:
    """An image read from a file: its pixels and the metadata worth carrying along.

    Attributes
    ----------
    pixels : numpy.ndarray
        (H, W) or (H, W, C) with C in {2 (grey + alpha), 3 (RGB), 4 (RGBA)};
        dtype uint8, uint16 (0..65535) or float32 (0..1 full scale), for grey
        and colour alike; C-contiguous and writable (but see ``pillow_rows`` of
        :func:`read_image`).
    mode : {'L', 'LA', 'RGB', 'RGBA', 'I;16', 'LA;16', 'RGB;16', 'RGBA;16', 'F', 'LA;F', 'RGB;F', 'RGBA;F'}
        The layout (see the module documentation): a Pillow mode after
        expansion (palette to RGB/RGBA, 1-bit to L, CMYK to RGB, ...), or
        one of the codec's 16-bit and float modes.
    has_alpha : bool
        True when the last channel is alpha (modes LA and RGBA, of any depth).
    format : str or None
        The source format as Pillow names it, e.g. ``"PNG"``, ``"JPEG"``.
    exif : bytes or None
        Raw EXIF, always starting with ``b"Exif\\x00\\x00"``; never applied to
        the pixels (an Orientation tag is kept as is, and read into ``orientation``).
    icc_profile : bytes or None
        The embedded ICC colour profile.
    xmp : bytes or None
        The XMP packet (UTF-8 XML).
    dpi : tuple of float or None
        Horizontal and vertical resolution in dots per inch (PNG and BMP values
        snapped to the whole number they approximate, others rounded to 0.01).
    more_frames : tuple of numpy.ndarray
        The frames of an animation (GIF, APNG, animated WebP) or the pages of
        a multi-page TIFF after the first, which is ``pixels``; empty for a
        single image.  Each is in ``pixels``' layout (mode, dtype, channels);
        animation frames are full canvases of ``pixels``' size, composited
        as a viewer shows them; TIFF pages may differ in size.
    animation : Animation or None
        The frames' timing, for an animation; None for a single image and
        for TIFF pages.
    """

    pixels: np.ndarray
    mode: str
    has_alpha: bool
    format: str | None = None
    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None
    #: The EXIF Orientation (1..8; 1 where there is none or it is not one of those):
    #: how a viewer turns the stored ``pixels`` to show them.  Never applied to the
    #: pixels here; the pipeline turns the kernels (see ``imgconv.kernels.orient_kernel``).
    orientation: int = 1
    #: The file's text (PNG chunks, JPEG COM, GIF comment, TIFF text tags), in file order.
    text: tuple[filemeta.Text, ...] = ()
    #: How the file was compressed (JPEG tables, subsampling, progressive; WebP lossless
    #: or lossy and its quality), for writing it back the same way; None for other formats.
    encoding: filemeta.Encoding | None = None
    # Frames and pages: ``pixels`` is the first; these are the ones after it.
    more_frames: tuple[np.ndarray, ...] = ()
    animation: Animation | None = None

    @property
    def frame_count(self) -> int:
        """How many frames or pages the image has: 1 + ``len(more_frames)``."""
        return 1 + len(self.more_frames)

    def all_frames(self) -> tuple[np.ndarray, ...]:
        """Every frame or page, the first (``pixels``) included."""
        return (self.pixels, *self.more_frames)

    def __repr__(self):
        present = [name for name in ("exif", "icc_profile", "xmp", "text") if getattr(self, name)]
        return (
            f"ImageData(shape={self.pixels.shape}, dtype={self.pixels.dtype}, mode={self.mode!r}, "
            f"has_alpha={self.has_alpha}, format={self.format!r}, dpi={self.dpi}, "
            f"metadata={present}" + (f", frames={self.frame_count})" if self.more_frames else ")")
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
# the size guard (sized by memory: imgconv.memory)


def _pixel_limit(float_copies=0):
    """The :class:`imgconv.memory.Guard` read_image applies: sized by memory, or
    IMGCONV_MAX_PIXELS's pixel count (ImageError for a bad value)."""
    return memory.guard_from_environment(float_copies)


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


def _refuse_bomb(name, size, limit, frames=1):
    """Refuse, before decoding, an image of ``size`` (width, height; ``frames``
    of them) that the guard ``limit`` (bound to the image's layout) does not let
    through."""
    width, height = size
    limit.check(name, width, height, frames)


# What Pillow holds per pixel of its own decoded image, by mode (everything else: 4).
_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def _decoded_layout(im, rawmode, pillow_rows=False):
    """The :class:`imgconv.memory.Layout` that ``_canonical_pixels`` will give
    an opened, not yet decoded ``im`` (from its header: mode, transparency)."""
    if (deep := _codec_mode(im, rawmode)) is not None:
        return _codec_layout(deep)  # decoded by the codec, 16-bit or float
    mode = im.mode
    pillow = _PILLOW_BYTES.get(mode, 4)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return memory.Layout(2, 1, False, pillow, "grey, 16-bit")
    if mode == "I":
        # int32 in Pillow, copied to int32, then to uint16 (or float32)
        return memory.Layout(4, 1, False, pillow + 4, "grey, 32-bit")
    if mode == "F":
        return memory.Layout(4, 1, False, pillow, "grey, float")
    transparent = "transparency" in im.info
    if mode in ("1", "L") and transparent:
        return memory.Layout(2, 2, True, pillow + 4, "grey + alpha, 8-bit")  # the colour key becomes alpha
    if mode in ("1", "L"):
        return memory.Layout(1, 1, False, pillow, "grey, 8-bit")
    if mode in ("LA", "La"):
        return memory.Layout(2, 2, True, pillow + (4 if mode == "La" else 0), "grey + alpha, 8-bit")
    if ";16" in rawmode and rawmode.startswith("LA"):
        return memory.Layout(2, 2, True, pillow + 4, "grey + alpha")
    palette_alpha = mode == "P" and im.palette is not None and "A" in im.palette.mode
    alpha = mode in ("RGBA", "RGBa", "PA") or (mode in ("P", "RGB") and transparent) or palette_alpha
    converted = mode not in ("RGB", "RGBA") or transparent  # P, CMYK, YCbCr, ... go through a converted copy
    channels = 4 if alpha else 3
    if pillow_rows and mode == "RGB" and not converted and im.format in _DECODE_INTO_FORMATS:
        # Decoded into Pillow's 4-byte rows and filtered in that layout (_pixels_of): 4
        # bytes a pixel for the input and the output, and no decoder's image beside them.
        return memory.Layout(4, 3, False, 4, "RGB, 8-bit")
    return memory.Layout(channels, channels, alpha, pillow + (4 if converted else 0), "RGBA, 8-bit" if alpha else "RGB, 8-bit")


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


def read_image(path, *, float_copies=0, pillow_rows=False) -> ImageData:
    """Read an image file into memory, completely.

    The file is decoded in full here (so a truncated file fails here, not later)
    and closed before returning: writing the result over the same path is safe.
    Every frame of an animation (GIF, APNG, WebP) and every page of a TIFF
    is read (``ImageData.more_frames``; the first is ``pixels``), each frame
    composited as a viewer shows it; an MPO is read as its first image.

    Parameters
    ----------
    path : str or os.PathLike
        A PNG, JPEG, TIFF, BMP, WebP or GIF file (recognised by content), or
        ``"-"`` (``STDIO``) for the whole of standard input.
    float_copies : int or callable
        For the memory guard (:func:`imgconv.memory.memory_needed`): how many
        full-size float32 copies of the image the filter that follows holds, or
        a function of ``has_alpha`` that says (:func:`imgconv.chain.float_copies`);
        0, the default, is a single filter on its fused path.
    pillow_rows : bool or callable
        8-bit RGB decoded into numpy's memory (JPEG, PNG, BMP) is left in Pillow's rows
        of 4 bytes a pixel (R, G, B, a pad byte of 255): ``pixels`` is then the view
        ``rows[:, :, :3]``, not C-contiguous, which the compiled kernels read as they are
        and whose filtered result goes to the encoder without a copy
        (``engine.run.padded_rows``; the per-file path, ``pipeline.filter_file``).  A
        callable is asked ``pillow_rows(width, height)`` once the size is known.
        Default: packed pixels, as every other layout.

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
        When the pixels read lose something the file holds (a 16-bit APNG's
        frames decoded at 8 bits, 32-bit integers read as float, CMYK converted
        to RGB without a usable ICC profile, associated alpha read as straight).
    """
    if isinstance(path, str) and path == STDIO:
        return _read_stdin(_pixel_limit(float_copies), pillow_rows)
    name = _name(path)
    limit = _pixel_limit(float_copies)
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
    with stream, _native_chatter_folded(name):
        try:
            return _read_stream(name, stream, limit, pillow_rows)
        except MemoryError as exc:
            raise _out_of_memory(name, limit) from exc


@contextlib.contextmanager
def _native_chatter_folded(name):
    """Keep what native decoders print on file descriptor 2 (libtiff's
    "TIFFReadDirectory: ..." lines) off the user's terminal: it is captured
    while a file is decoded and, when the read fails, folded into the one-line
    error.  Only in the main thread of a process (the command line, a batch
    worker): redirecting the descriptor would swallow other threads' output."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    import tempfile

    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except ImageError as exc:
            said = _captured_line(capture)
            if not said:
                raise
            raise ImageError(f"{exc} [decoder: {said}]") from exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _captured_line(capture):
    """The first non-empty line a native library printed (abbreviated), or ''."""
    capture.seek(0)
    for line in capture.read(4096).decode("utf-8", "replace").splitlines():
        line = " ".join(line.split())
        if line:
            return line if len(line) <= 160 else line[:157] + "..."
    return ""


def _read_stdin(limit, pillow_rows=False):
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
    with _native_chatter_folded(name):
        try:
            return _read_stream(name, io.BytesIO(data), limit, pillow_rows)
        except MemoryError as exc:
            raise _out_of_memory(name, limit) from exc


def _out_of_memory(name, limit):
    """The one line for running out of memory while decoding (an image let past
    the memory guard by IMGCONV_MAX_PIXELS, or other programs taking memory
    meanwhile), rather than a MemoryError."""
    why = f" ({MAX_PIXELS_ENV}={limit.max_pixels} let it past the memory guard)" if limit.max_pixels is not None else ""
    return ImageError(f"cannot read '{name}': not enough memory to decode it{why}")


def _read_stream(name, stream, limit, pillow_rows=False):
    try:
        with _pillow_limit_off():
            im = Image.open(stream, formats=_READ_FORMATS)
    except _PILLOW_FILE_ERRORS as exc:
        if isinstance(exc, UnidentifiedImageError):
            image = _read_unopened_tiff(name, stream, limit)  # float colour, 16-bit grey + alpha
            if image is not None:
                return image
        raise _open_error(name, exc) from exc

    with im:
        rawmode = _source_rawmode(im)
        if callable(pillow_rows):  # asked only where it could matter: RGB decoded into numpy's memory
            pillow_rows = im.mode == "RGB" and im.format in _DECODE_INTO_FORMATS and bool(pillow_rows(*im.size))
        limit = limit.bound(_decoded_layout(im, rawmode, pillow_rows))  # the memory guard, for this image's layout
        _refuse_bomb(name, im.size, limit)
        opened, frame_count = im, _count_frames(name, im, stream, limit)  # every frame against the limit
        if _codec_mode(im, rawmode) is not None and not (im.format == "PNG" and frame_count > 1):
            # 16-bit colour or grey + alpha: Pillow would decode it at 8 bits (a
            # 16-bit APNG's frames are still Pillow's, below: the codec reads one image)
            return _read_codec_image(name, stream, im, frame_count)
        # TIFF metadata is all in the header, and must be taken before loading:
        # Pillow's TIFF loader rotates the pixels by the EXIF Orientation and
        # strips the tag (from XMP too); imgconv keeps pixels and EXIF as stored.
        metadata = orientation = None
        if im.format == "TIFF":
            metadata = _metadata_or_warn(name, im)
            orientation = _pillow_orientation(im)
        # A single image decoded straight into numpy's memory (no copy for most modes).
        storage = _numpy_storage(im) if frame_count == 1 else None
        if storage is not None and pillow_rows:
            storage = dataclasses.replace(storage, pillow_rows=True)
        try:
            pillow_limit = Image.MAX_IMAGE_PIXELS
            if pillow_limit is not None and im.width * im.height > pillow_limit:
                # Let through by imgconv's own guard: keep Pillow's loaders from refusing it.
                with _pillow_limit_off():
                    im.load()
            else:
                im.load()
        except _PILLOW_FILE_ERRORS as exc:
            raise ImageError(f"cannot read '{name}': truncated or corrupt image data ({_one_line(exc)})") from exc
        source_format = "JPEG" if im.format == "MPO" else im.format
        # Text and compression settings, from the file as Pillow opened it (before any transpose).
        kept = {"text": filemeta.read_text(im, stream), "encoding": filemeta.read_encoding(im, stream)}
        if orientation in _UNDO_ORIENTATION and _ORIENTATION not in im.getexif():
            im = im.transpose(_UNDO_ORIENTATION[orientation])  # Pillow applied it: undo
        if metadata is None:
            metadata = _metadata_or_warn(name, im)  # PNG may keep EXIF after the pixels
        try:
            pixels, mode, notes = _canonical_pixels(im, rawmode, metadata, storage)
        except (ValueError, OSError) as exc:
            raise ImageError(f"cannot read '{name}': unsupported pixel mode {im.mode} ({_one_line(exc)})") from exc
        frames = {}
        if frame_count > 1:
            pixels, mode, more_frames, animation = _read_more_frames(name, opened, frame_count, pixels, mode, notes)
            frames = {"more_frames": more_frames, "animation": animation}

    for note in notes:
        warnings.warn(f"'{name}': {note}", ImgconvWarning, stacklevel=3)
    return ImageData(
        pixels=pixels,
        mode=mode,
        has_alpha=mode in ("LA", "RGBA"),
        format=source_format,
        **frames,
        **metadata,
        **kept,
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
        "orientation": _exif_orientation(exif),
    }


def _exif_orientation(exif):
    """The EXIF Orientation in ``exif`` (bytes): 1..8, or 1 where there is none,
    it is not one of those, or the EXIF cannot be parsed (viewers then show the
    stored pixels too).  XMP's tiff:Orientation is not read: viewers go by EXIF."""
    if not exif:
        return 1
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        value = parsed.get(_ORIENTATION)
    except _PILLOW_METADATA_ERRORS:
        return 1
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8 else 1


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
        if tag in _TIFF_LAYOUT_TAGS or (tag == 270 and filemeta.layout_description(exif[tag])):
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


def _canonical_pixels(im, rawmode, metadata, storage=None):
    """(pixels, mode, notes) in one of the canonical layouts, from a loaded image
    (``storage``: what :func:`_numpy_storage` gave it before loading, if anything)."""
    mode = im.mode
    notes = []
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        if "transparency" in im.info:
            notes.append("the transparent grey level of a 16-bit image is ignored")
        return _owned(_pixels_of(im, storage).astype(np.uint16, copy=False)), "I;16", notes
    if mode == "I":
        values = np.array(im)
        if values.size == 0 or (values.min() >= 0 and values.max() <= 65535):
            return _owned(values.astype(np.uint16)), "I;16", notes
        notes.append("32-bit integer pixels outside 0..65535 are read as 32-bit float (exact up to 16777216)")
        return _owned(values.astype(np.float32)), "F", notes
    if mode == "F":
        return _owned(_pixels_of(im).astype(np.float32, copy=False)), "F", notes

    if ";16" in rawmode and mode in ("RGB", "RGBA"):
        what = "grey + alpha" if rawmode.startswith("LA") else rawmode.split(";")[0]
        # Only an animated PNG's frames come here (the codec reads single 16-bit images).
        notes.append(f"16-bit {what} frames of an animated PNG are read as 8-bit (Pillow decodes them; the codec reads single images)")
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
    from imgconv.engine import run

    pixels = _pixels_of(im, storage)
    return (pixels if run.padded_rows(pixels) is not None else _owned(pixels)), im.mode, notes


# Decoding into numpy's memory.  Pillow keeps an image in its own memory, a row of
# 1 (L), 2 (I;16) or 4 bytes a pixel (everything else: RGB as R, G, B and a pad
# byte, LA as L, L, L, A); numpy's array of the same pixels is packed (RGB: 3
# bytes a pixel).  Given that memory by numpy (``Image.core.map_buffer``, which
# ``Image.frombuffer`` uses; set as ``im.im`` before loading, where the loader's
# ``load_prepare`` keeps it), the decoder writes into an array: for the modes
# whose rows Pillow lays out as numpy does, that array is the pixels, with no
# copy; for the others one packing pass makes them.  numpy's large arrays are
# also backed by huge pages where the system offers them (madvise), which
# Pillow's are not: a 12-megapixel RGB image in Pillow's memory costs 11,700
# page faults, 20-35 ms, before any pixel is written (docs/performance.md,
# "The per-file path without the avoidable copies").

#: The loaders that decode into ``im.im`` as set before ``load()`` (ImageFile's own
#: ``load_prepare``), one image a file (an MPO is read as its first image, a JPEG).
#: Not TIFF (its loader sizes its memory by tiles and turns it by the orientation),
#: GIF or WebP (their own loaders).
_DECODE_INTO_FORMATS = ("JPEG", "MPO", "PNG", "BMP")

#: Pillow's memory per mode: (numpy dtype of a sample, samples per pixel in Pillow's
#: row, in numpy's array), for the modes decoded into numpy's memory and encoded from it.
_PILLOW_STORAGE = {
    "L": ("u1", 1, 1),
    "LA": ("u1", 4, 2),
    "RGB": ("u1", 4, 3),
    "RGBA": ("u1", 4, 4),
    "I;16": ("<u2", 1, 1),
    "F": ("=f4", 1, 1),
}


@dataclass(frozen=True)
class _Storage:
    """Pillow's image memory, allocated by numpy: the Pillow core and its array."""

    core: object
    array: np.ndarray
    pillow_rows: bool = False  # RGB: pixels are a view of these rows (read_image's pillow_rows)


def _numpy_storage(im):
    """Give the opened, not yet loaded ``im`` numpy's memory to decode into.

    Returns a :class:`_Storage` (``im.im`` is set to its core), or None where
    ``im``'s loader or mode is not one decoded this way, or Pillow's internals
    are not as expected (then Pillow allocates, as before)."""
    layout = _PILLOW_STORAGE.get(im.mode)
    width, height = im.size
    if layout is None or im.format not in _DECODE_INTO_FORMATS or width == 0 or height == 0:
        return None
    if getattr(im, "_im", None) is not None or len(im.tile) != 1:
        return None
    dtype, samples, _ = layout
    # zeros, as Pillow's own memory is: calloc, so the pages are touched by the decoder only
    array = np.zeros((height, width) if samples == 1 else (height, width, samples), dtype)
    core = _map_array(array, im.mode)
    if core is None:
        return None
    im.im = core
    return _Storage(core, array)


def _map_array(array, mode):
    """A Pillow core of ``mode`` whose rows are ``array``'s memory (C-contiguous,
    Pillow's layout for ``mode``), or None where Pillow cannot map it."""
    width, height = array.shape[1], array.shape[0]
    try:
        core = Image.core.map_buffer(array, (width, height), "raw", 0, (mode, 0, 1))
    except (AttributeError, TypeError, ValueError, OSError):
        return None
    if core.mode != mode or tuple(core.size) != (width, height):
        return None
    return core


def _pixels_of(im, storage=None):
    """``np.array(im)`` of a loaded image, without its full-size intermediates.

    ``np.array(im)`` goes through ``im.tobytes()``, which collects the raw
    encoder's chunks and joins them: at its peak Pillow's image, the chunks and
    the joined bytes (then the array) are all held, 3.3 times an 8-bit RGB
    image's size.  Here each chunk goes straight into the array, so reading
    holds Pillow's image and the array only (measured: docs/performance.md,
    "Memory"), and is faster too; the chunks are small (256 KiB), so the
    allocator reuses one chunk's memory for the next (4 MiB chunks were
    fresh pages each, 9,400 page faults for a 12-megapixel RGB image).  Where
    ``im`` was decoded into numpy's memory (``storage``, still its memory) in
    the array's own layout, that array is returned as it is.  The same bytes,
    so the same array.
    """
    width, height = im.size
    if storage is not None and im.im is storage.core and im.mode == storage.core.mode:
        _, pillow, numpy = _PILLOW_STORAGE[im.mode]
        if pillow == numpy:
            return storage.array  # Pillow's rows are the array's: nothing to pack
        if im.mode == "RGB" and storage.pillow_rows:
            from imgconv.engine import run  # numpy only, and only where pixels are read

            # Not packed: the kernels read Pillow's 4-byte rows as they are, and write
            # theirs in that layout for the encoder (engine.run.padded_rows).  Pillow's
            # RGB unpackers set every pad byte to 255.
            run.mark_pads_set(storage.array)
            run.set_packer(_pack_rgb)  # for the routes that take packed rows
            return storage.array[:, :, :3]
    if width == 0 or height == 0 or im.mode == "1":
        return np.array(im)
    probe = np.asarray(im.crop((0, 0, 1, 1)))  # the dtype and channels np.array would give
    out = np.empty((height, width) + probe.shape[2:], probe.dtype)
    view = out.reshape(-1).view(np.uint8)
    try:
        encoder = Image._getencoder(im.mode, "raw", im.mode)  # what tobytes() uses
    except (AttributeError, OSError, TypeError, ValueError):
        return np.array(im)  # a Pillow without it: the plain way
    try:
        encoder.setimage(im.im, (0, 0, width, height))
        done, code = 0, 0
        while not code:
            _, code, data = encoder.encode(max(1 << 18, width * 16))  # at least one row a chunk
            if done + len(data) > view.size:
                code = -1
                break
            view[done : done + len(data)] = np.frombuffer(data, np.uint8)
            done += len(data)
            del data  # one chunk at a time
    finally:
        encoder.cleanup()
    if code < 0 or done != view.size:
        return np.array(im)  # not what tobytes() would have given: let it say why
    return out


def _pack_rgb(rows):
    """(H, W * 4) uint8 RGB rows in Pillow's layout packed to (H, W * 3) by Pillow's raw
    packer (``engine.run.set_packer``); None where Pillow cannot map them."""
    height, width = rows.shape[0], rows.shape[1] // 4
    image = _shared_image(_map_array(rows.reshape(height, width, 4), "RGB"), "RGB")
    if image is None:
        return None
    return _pixels_of(image).reshape(height, width * 3)


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
# frames and pages (reading)
#
# Animations (GIF, APNG, animated WebP) are read frame by frame through Pillow's
# seek, which composites each frame onto the canvas as a viewer shows it
# (disposal, blending, transparency); every frame is a full canvas.  TIFF pages
# are independent images.  The later images of an MPO (a camera's previews or
# depth maps) are not frames: only the first is read, as from any JPEG.

#: The output formats that hold several frames or pages.
MULTI_FRAME_FORMATS = ("GIF", "PNG", "WEBP", "TIFF")
_ANIMATION_FORMATS = ("GIF", "PNG", "WEBP")

# Each canonical mode's sample kind: modes of one kind widen into each other exactly.
_SAMPLE_KIND = {"L": "8-bit", "LA": "8-bit", "RGB": "8-bit", "RGBA": "8-bit", "I;16": "16-bit", "F": "float"}

# Seeking to a later frame or page, Pillow's readers also fail as they do inside
# Image.open, which turns these into "cannot identify": the GIF reader indexes
# past a cut file's end, the TIFF reader's setup of a damaged directory raises
# KeyError or TypeError for a missing tag.
_FRAME_ERRORS = _PILLOW_FILE_ERRORS + (IndexError, KeyError, TypeError)


def _refuse_frames(name, size, count, limit, *, so_far=False):
    """The guard over ``count`` frames of ``size``, all held at once; ``so_far``:
    the file has at least that many (its counting stopped there)."""
    try:
        _refuse_bomb(name, size, limit, frames=count)
    except ImageError as exc:
        if not so_far:
            raise
        raise ImageError(f"{exc} (counted so far: the file holds at least {count} frames)") from None


def _count_frames(name, im, stream, limit):
    """How many frames or pages the opened ``im`` holds (1 for a single image),
    refused by the pixel limit over all of them before any is decoded."""
    if im.format == "GIF":
        return _count_gif_frames(name, stream, im.size, limit)
    if im.format == "TIFF":
        return _count_tiff_pages(name, im, limit)
    if im.format in ("PNG", "WEBP"):
        count = getattr(im, "n_frames", 1)  # declared by the file (APNG acTL, WebP ANIM)
        if count > 1:
            _refuse_frames(name, im.size, count, limit)
        return count
    return 1


def _powers_of_two():
    step = 1
    while True:
        yield step
        step *= 2


def _count_gif_frames(name, stream, size, limit):
    """The images of a GIF, counted from its blocks without decoding any.

    A GIF does not say how many frames it has, and Pillow decodes each frame
    as it counts them; this walk skips the data.  Every frame is a full
    canvas once composited, so the guard counts canvases, checked at each
    power of two: a file claiming 100 000 frames of a large canvas is refused
    after reading a few hundred of its headers.
    """
    start = stream.tell()
    try:
        stream.seek(0)
        data = stream.read()  # a walk over bytes in memory: a third of the time of reads from the file
    finally:
        stream.seek(start)
    checks = _powers_of_two()
    next_check = next(checks)
    count, end = 0, len(data)
    if end < 13:
        return 1
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # after the global colour table
    while at < end:
        tag = data[at]
        at += 1
        if tag == 0x3B:  # trailer
            break
        if tag == 0x21:  # extension: a label, then data blocks
            at += 1
        elif tag == 0x2C:  # image descriptor, local colour table, LZW code size, then data blocks
            if at + 9 > end:
                break
            flags = data[at + 8]
            at += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            count += 1
            if count == next_check:
                _refuse_frames(name, size, count, limit, so_far=True)
                next_check = next(checks)
        else:
            continue  # a stray byte between blocks: Pillow skips it too
        while at < end and data[at]:
            at += data[at] + 1
        at += 1
    if count > 1:
        _refuse_frames(name, size, count, limit)
    return max(count, 1)


def _count_tiff_pages(name, im, limit):
    """The pages of a TIFF, from its directories (no pixel decoded), refused
    by the limit over all of them (checked at each power of two).  Pages may
    differ in size: they count as pages of the largest, as many as hold
    their pixels."""
    if not getattr(im, "is_animated", False):  # no second directory
        return 1
    checks = _powers_of_two()
    next_check = next(checks)
    largest, pixels, count = (1, 1), 0, 0
    try:
        while True:
            try:
                im.seek(count)
            except EOFError:
                break
            count += 1
            pixels += im.width * im.height
            if im.width * im.height > largest[0] * largest[1]:
                largest = im.size
            if count == next_check:
                _refuse_frames(name, largest, -(-pixels // (largest[0] * largest[1])), limit, so_far=True)
                next_check = next(checks)
        _refuse_frames(name, largest, -(-pixels // (largest[0] * largest[1])), limit)
        im.seek(0)
    except _FRAME_ERRORS as exc:
        raise ImageError(f"cannot read '{name}': page {count + 1}: corrupt page directory ({_one_line(exc)})") from exc
    return count


def _read_more_frames(name, im, count, pixels, mode, notes):
    """The frames or pages after the first of ``im`` (the first loaded, as
    ``pixels`` in ``mode``), all in one layout, and an animation's timing.

    Returns ``(pixels, mode, more_frames, animation)``: the first frame is
    widened too when another frame has colour or alpha it lacks.  ``notes``
    gains what reading them lost, each said once.
    """
    animated = im.format in _ANIMATION_FORMATS
    what = "frame" if animated else "page"
    default_image = bool(im.format == "PNG" and getattr(im, "default_image", False))
    loop = im.info.get("loop") if animated else None
    timings = [_frame_timing(im, default_image)]
    frames, modes = [pixels], [mode]
    large = Image.MAX_IMAGE_PIXELS is not None and im.width * im.height > Image.MAX_IMAGE_PIXELS
    with _pillow_limit_off() if large else contextlib.nullcontext():
        for index in range(1, count):
            where = f"{what} {index + 1} of {count}"
            try:
                im.seek(index)
                orientation = _pillow_orientation(im) if im.format == "TIFF" else None
                rawmode = _source_rawmode(im)
                im.load()
            except _FRAME_ERRORS as exc:
                raise ImageError(f"cannot read '{name}': {where}: truncated or corrupt ({_one_line(exc)})") from exc
            frame = im
            if orientation in _UNDO_ORIENTATION and _ORIENTATION not in im.getexif():
                frame = im.transpose(_UNDO_ORIENTATION[orientation])  # as for the first page
            own = {"icc_profile": _as_bytes(im.info.get("icc_profile"))}  # a CMYK page's own profile
            try:
                array, frame_mode, frame_notes = _canonical_pixels(frame, rawmode, own)
            except (ValueError, OSError) as exc:
                raise ImageError(f"cannot read '{name}': {where}: unsupported pixel mode {im.mode} ({_one_line(exc)})") from exc
            notes.extend(note for note in frame_notes if note not in notes)
            frames.append(array)
            modes.append(frame_mode)
            if animated:
                timings.append(_frame_timing(im, False))
    frames, mode = _common_layout(frames, modes, what, notes)
    animation = None
    if animated:
        frames = _on_canvas(name, frames)
        durations, disposals, blends = zip(*timings)
        background = im.info.get("background") if im.format == "WEBP" else None
        animation = Animation(
            durations=tuple(float(d) for d in durations),
            loop=loop if isinstance(loop, int) else None,
            disposals=tuple(d for d in disposals if d is not None),
            blends=tuple(b for b in blends if b is not None),
            background=tuple(background) if isinstance(background, tuple) and len(background) == 4 else None,
            default_image=default_image,
        )
    return frames[0], mode, tuple(frames[1:]), animation


def _frame_timing(im, default_image):
    """(duration in ms, disposal, blend) of the current frame (None where the format has none)."""
    duration = 0.0 if default_image else im.info.get("duration", 0) or 0
    if im.format == "GIF":
        return duration, getattr(im, "disposal_method", 0), None
    if im.format == "PNG":
        return duration, im.info.get("disposal", 0), im.info.get("blend", 0)
    return duration, None, None


def _common_layout(frames, modes, what, notes):
    """The frames widened, exactly, to one layout: 8-bit grey, colour and
    alpha to what any frame has; 16-bit grey to float when a page is float.
    Pages of another sample kind than the first (8-bit among 16-bit; any other
    mode than the first's, for the codec's 16-bit and float colour) are left
    out, with a note."""
    kinds = [_SAMPLE_KIND.get(mode, mode) for mode in modes]
    kind = kinds[0]
    joins = {kind} | ({"16-bit", "float"} if kind in ("16-bit", "float") else set())
    kept = [index for index, one in enumerate(kinds) if one in joins]
    if len(kept) < len(modes):
        left = len(modes) - len(kept)
        others = sorted({f"{one} {mode}" if one != mode else mode for one, mode in zip(kinds, modes) if one not in joins})
        first = f"{kind} {modes[0]}" if kind != modes[0] else modes[0]
        notes.append(
            f"{left} {what}{'s' if left > 1 else ''} in another layout ({', '.join(others)}) than the first "
            f"({first}) not read: every {what} is filtered and written in one layout"
        )
        frames = [frames[i] for i in kept]
        modes = [modes[i] for i in kept]
    if kind == "8-bit":
        colour = any(m in ("RGB", "RGBA") for m in modes)
        alpha = any(m in ("LA", "RGBA") for m in modes)
        target = ("RGB" if colour else "L") + ("A" if alpha else "")
    elif kind in ("16-bit", "float"):
        target = "F" if "F" in modes else "I;16"
    else:
        target = modes[0]
    return [_widen(frame, mode, target) for frame, mode in zip(frames, modes)], target


def _widen(array, mode, target):
    """``array`` (canonical ``mode``) in ``target``'s layout, every value kept."""
    if mode == target:
        return array
    if target == "F":
        return array.astype(np.float32)
    planes = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[2])]
    alpha = planes.pop() if mode in ("LA", "RGBA") else None
    if target in ("RGB", "RGBA") and len(planes) == 1:
        planes *= 3
    if target in ("LA", "RGBA"):
        planes.append(alpha if alpha is not None else np.full(array.shape[:2], 255, np.uint8))
    return _owned(np.stack(planes, axis=-1))


def _on_canvas(name, frames):
    """Animation frames on the first frame's canvas (a GIF frame reaching past the
    logical screen grows Pillow's canvas; viewers clip it to the screen)."""
    height, width = frames[0].shape[:2]
    fitted = [frames[0]]
    for frame in frames[1:]:
        if frame.shape[:2] != (height, width):
            if frame.shape[0] < height or frame.shape[1] < width:
                raise ImageError(f"cannot read '{name}': a frame of {frame.shape[1]}x{frame.shape[0]} on a {width}x{height} canvas")
            frame = _owned(frame[:height, :width])
        fitted.append(frame)
    return fitted


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
    """Bring the samples to a depth that ``fmt`` holds: 16-bit samples stay
    16-bit in PNG and TIFF, float stays float in TIFF, in every layout (Pillow
    writes grey, the codec colour and grey + alpha); the 8-bit formats get
    ``round(v / 257)``, float is scaled from [0, 1] to 16 bits (PNG) or 8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        if fmt in ("PNG", "TIFF"):
            return array
        warn(f"{fmt} cannot hold 16-bit samples; written as 8-bit (value / 257, rounded)")
        return _to_8bit(array)
    # float32
    if fmt == "TIFF":
        return array
    target, bits = (np.uint16, 16) if fmt == "PNG" else (np.uint8, 8)
    converted, outside = _float_to_int(array, target)
    clipped = f"; {outside} values outside [0, 1] were clipped" if outside else ""
    warn(f"{fmt} cannot hold floating-point samples; written as {bits}-bit (scaled from [0, 1]){clipped}")
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
                if tag in _TIFF_LAYOUT_TAGS or (tag == 270 and filemeta.layout_description(tags[tag])):
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


def write_image(
    path,
    pixels,
    *,
    like: ImageData | None = None,
    format: str | None = None,
    quality: int | None = None,
    more_frames=(),
    dir_fd: int | None = None,
) -> None:
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
        convert and round before calling).  The layout decides the mode; PNG
        and TIFF hold 16-bit samples in every layout, TIFF float ones too.
    like : ImageData, optional
        The image read from the input: its EXIF, ICC profile, XMP, dpi and text
        are written where the format can hold them, and its compression is
        followed (a JPEG's tables, subsampling and progressive mode for a JPEG;
        lossy or lossless, and the quality, for a WebP).
    quality : int, optional
        JPEG and WebP quality, 1..100: a JPEG then uses libjpeg's tables for
        ``quality`` (a JPEG input's subsampling and progressive mode are still
        kept), a WebP is lossy at ``quality``.  No effect on other formats.
        Default: follow ``like`` (see :mod:`imgconv.filemeta`).
    more_frames : sequence of numpy.ndarray, optional
        The frames or pages after the first (``pixels``), each of ``pixels``'
        dtype and channels.  GIF, PNG (as APNG), WebP and TIFF write them all,
        animations as full frames with ``like.animation``'s durations and loop
        (100 ms each and looping for ever without it; TIFF has no timing);
        JPEG and BMP write the first only, with a warning.
    format : str, optional
        The format (``"png"``, ``"jpg"``, ...; see :func:`format_name`) instead
        of the one ``path``'s extension names.  Required when ``path`` is
        ``"-"`` (``STDIO``): the image is then encoded completely and written
        to standard output in one piece.
    dir_fd : int, optional
        An opened folder to write ``path``'s last component in (see
        :func:`write_atomically`); ``path`` still names the file in messages.

    Raises
    ------
    ImageError
        For an unknown extension, a missing output folder, a path that is a
        directory, or a failure to write (permission, full disk, encoder error).
    ValueError
        For ``pixels`` of a dtype or shape other than the above, or a
        ``quality`` that is not a whole number from 1 to 100.

    Warns
    -----
    ImgconvWarning
        For each thing the output cannot keep: bit depth, floating point,
        alpha, colours beyond a GIF palette, metadata, text, an ICC profile for
        the wrong colour space.
    """
    to_stdout = isinstance(path, str) and path == STDIO
    if to_stdout and format is None:
        raise ImageError("cannot write to standard output without a format (png, jpg, tif, ...)")
    name = STDOUT_NAME if to_stdout else _name(path)
    fmt = format_name(format) if format is not None else output_format(path)
    pixels = _check_pixels(pixels)
    more_frames = _check_frames(pixels, more_frames)
    quality = filemeta.check_quality(quality)
    if to_stdout:
        _write_stdout(pixels, fmt, like, quality, more_frames)
        return
    folder = os.path.dirname(os.path.abspath(name))
    if dir_fd is None and not os.path.isdir(folder):
        shown = os.path.dirname(name) or folder
        if os.path.exists(folder):
            raise ImageError(f"cannot write '{name}': '{shown}' is not a folder")
        raise ImageError(f"cannot write '{name}': folder '{shown}' does not exist")
    if dir_fd is None and os.path.isdir(name):  # (in an opened folder, the rename refuses a folder)
        raise ImageError(f"cannot write '{name}': is a directory")

    notes = []  # what the output could not keep: reported once the file is written
    image, params = _encode_frames(pixels, more_frames, fmt, like, notes.append, quality)
    _save_atomically(name, image, fmt, params, dir_fd=dir_fd)
    for note in notes:
        warnings.warn(f"'{name}': {note}", ImgconvWarning, stacklevel=2)


def _encode(pixels, fmt, like, warn, quality=None):
    """A Pillow image ready to save as ``fmt``, and its save parameters."""
    array = _fit_depth(fmt, pixels, warn)
    if fmt == "GIF":
        image, params = _to_palette(array, warn)
    else:
        array = _fit_channels(fmt, array, warn)
        image = _image_for(array)  # a Pillow image, or the codec's for 16-bit and float colour
        params = {}
    params.update(filemeta.save_params(fmt, image.mode, like.encoding if like is not None else None, quality))
    params.update(_metadata_params(fmt, image.mode, like, warn))
    if like is not None:
        filemeta.add_text(fmt, params, like.text, warn)
    return image, params


def _write_stdout(pixels, fmt, like, quality=None, more_frames=()):
    name = STDOUT_NAME
    notes = []
    image, params = _encode_frames(pixels, more_frames, fmt, like, notes.append, quality)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **params)
    except (OSError, ValueError, OverflowError, SyntaxError, struct.error, zlib.error) as exc:
        raise ImageError(f"cannot write '{name}': {_one_line(exc)}") from exc
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:
        raise ImageError(f"cannot write '{name}': standard output is not open")
    try:
        write_all(stream, buffer.getvalue())
    except OSError as exc:
        raise ImageError(f"cannot write '{name}': {exc.strerror or _one_line(exc)}") from exc
    for note in notes:
        warnings.warn(f"'{name}': {note}", ImgconvWarning, stacklevel=3)


# ---------------------------------------------------------------------------
# frames and pages (writing)
#
# Every frame is written as a full canvas, so that it shows as it was filtered
# whatever the viewer did with the one before: APNG frames replace the canvas
# (blend source, disposal none); GIF frames are disposed to the background when
# any frame has transparency (else kept, which Pillow's delta encoding needs);
# WebP's encoder composes full frames itself.  Pillow's GIF and WebP writers
# merge consecutive identical frames (adding their durations): they show the same.

#: Frame duration (ms) written for pages that have none (TIFF pages into an animation).
DEFAULT_FRAME_MS = 100.0


def _check_frames(pixels, more_frames):
    """``more_frames`` validated against ``pixels``: each an array of its dtype and channels."""
    checked = []
    for index, frame in enumerate(more_frames, 2):
        frame = _check_pixels(frame)
        if frame.dtype != pixels.dtype or _channels(frame) != _channels(pixels):
            raise ValueError(
                f"more_frames must match pixels' dtype and channels ({pixels.dtype}, {_channels(pixels)}); "
                f"frame {index} has {frame.dtype}, {_channels(frame)}"
            )
        checked.append(frame)
    return tuple(checked)


class _FrameNotes:
    """What the output loses, frame by frame, said once: a note every frame
    raised alike as it is; others with how many frames they concern (the text,
    its numbers included, from the first frame that raised it)."""

    def __init__(self):
        self.notes = {}  # key (the text without its numbers) -> [text, frames, texts differ]
        self.frames = 0

    def frame(self):
        """The warn function for the next frame."""
        import re

        self.frames += 1
        raised = set()

        def warn(text):
            key = re.sub(r"\d+", "#", text)
            if key in raised:
                return
            raised.add(key)
            entry = self.notes.setdefault(key, [text, 0, False])
            entry[1] += 1
            entry[2] = entry[2] or entry[0] != text

        return warn

    def report(self, warn):
        for text, frames, differ in self.notes.values():
            if frames == self.frames and not differ:
                warn(text)
            else:
                warn(f"{text} (in {frames} of {self.frames} frames{'; figures from the first' if differ else ''})")


def _encode_frames(pixels, more_frames, fmt, like, warn, quality=None):
    """:func:`_encode` for every frame: an image (or a frames writer with
    Pillow's ``save`` signature) and the save parameters writing all of them
    as ``fmt`` holds them."""
    if not more_frames:
        return _encode(pixels, fmt, like, warn, quality)
    count = 1 + len(more_frames)
    if fmt not in MULTI_FRAME_FORMATS:
        warn(f"{fmt} holds one image; only the first of {count} frames was written")
        return _encode(pixels, fmt, like, warn, quality)
    animation = like.animation if like is not None else None
    if animation is not None and len(animation.durations) != count:
        animation = None  # not these frames' timing
    frames = [pixels, *more_frames]
    if animation is not None and animation.default_image and fmt != "PNG":
        import dataclasses

        warn(f"{fmt} has no default image: the APNG's (shown where animation is not supported) was not written")
        frames, animation = frames[1:], dataclasses.replace(animation, durations=animation.durations[1:], default_image=False)
    if fmt != "TIFF":
        same = [frame for frame in frames if frame.shape == frames[0].shape]
        if len(same) < len(frames):
            left = len(frames) - len(same)
            warn(f"{fmt} frames are all of one size: {left} of {len(frames)} pages of another size than the first were not written")
            frames = same
    notes = _FrameNotes()
    encoded = [_encode(frame, fmt, like, notes.frame(), quality) for frame in frames]
    notes.report(warn)
    image, params = encoded[0]
    if len(encoded) == 1:
        return image, params
    images = [one for one, _ in encoded]
    if fmt == "TIFF":
        if animation is not None:
            warn("TIFF pages have no timing; the frames' durations and loop were not written")
        params.update(save_all=True, append_images=images[1:])
        return _BufferedSave(image), params  # Pillow's TIFF writer reads back what it wrote
    if animation is not None and len(animation.durations) != len(frames):
        animation = None
    durations = list(animation.durations) if animation is not None else [DEFAULT_FRAME_MS] * len(frames)
    loop = animation.loop if animation is not None else 0
    if fmt == "PNG":
        default_image = animation is not None and animation.default_image
        return _AnimatedPNG(images, durations, 1 if loop is None else loop, default_image), params
    params.update(save_all=True, append_images=images[1:])
    if fmt == "GIF":
        transparent = False
        for one, (_, own) in zip(images, encoded):
            if "transparency" in own:  # each frame's own transparent index
                one.info["transparency"] = own["transparency"]
                transparent = True
        params.pop("transparency", None)
        rounded = [10 * round(d / 10) for d in durations]
        if any(abs(r - d) >= 1 for r, d in zip(rounded, durations)):
            warn("GIF holds frame durations in hundredths of a second; durations were rounded to them")
        params.update(duration=rounded, disposal=2 if transparent else 1)
        if loop is not None:
            params["loop"] = loop
    else:  # WEBP
        params.update(duration=[round(d) for d in durations], loop=1 if loop is None else loop)
        if animation is not None and animation.background is not None:
            params["background"] = animation.background
        exif = params.get("exif")
        if isinstance(exif, bytes) and exif.startswith(b"Exif\x00\x00"):
            params["exif"] = exif[6:]  # Pillow's animated WebP writer does not strip it, as its still one does
    return image, params


class _BufferedSave:
    """An image whose ``save`` encodes into memory, then writes the bytes: for
    writers that read back what they wrote (Pillow's multi-page TIFF), given a
    write-only stream."""

    def __init__(self, image):
        self.image = image

    def save(self, fp, format=None, **params):
        buffer = io.BytesIO()
        self.image.save(buffer, format=format, **params)
        fp.write(buffer.getvalue())


class _AnimatedPNG:
    """An APNG of full frames, with Pillow's ``save`` signature.

    Pillow encodes each frame as a whole PNG (the first with the save
    parameters: metadata, text, compression), and the frames are joined here:
    an ``acTL`` chunk, then a ``fcTL`` before each frame (disposal none, blend
    source: each replaces the canvas) and the later frames' image data as
    ``fdAT``.  Pillow's own APNG writer compares frames at 8 bits and merges
    16-bit frames that differ only beyond them; this one writes every frame.
    """

    def __init__(self, images, durations, loop, default_image):
        self.images, self.durations, self.loop, self.default_image = images, durations, loop, default_image

    def save(self, fp, format=None, **params):
        compression = {key: params[key] for key in ("compress_level", "optimize", "compress_type") if key in params}
        out = [b"\x89PNG\r\n\x1a\n"]
        sequence = 0  # shared by fcTL and fdAT chunks
        started = False
        playing = len(self.images) - (1 if self.default_image else 0)
        for kind, body in codec.png_chunks(_png_bytes(self.images[0], params)):
            if kind == b"IEND":
                break
            if kind == b"IHDR":
                size = body[:8]  # width and height, as fcTL holds them
            if kind == b"IDAT" and not started:
                out.append(codec._chunk(b"acTL", struct.pack(">II", playing, self.loop)))
                if not self.default_image:  # the first image is the first frame
                    out.append(_fctl(sequence, size, self.durations[0]))
                    sequence += 1
                started = True
            out.append(codec._chunk(kind, body))
        for image, duration in zip(self.images[1:], self.durations[1:]):
            chunks = list(codec.png_chunks(_png_bytes(image, compression)))
            out.append(_fctl(sequence, chunks[0][1][:8], duration))  # IHDR comes first
            sequence += 1
            for kind, body in chunks:
                if kind == b"IDAT":
                    out.append(codec._chunk(b"fdAT", struct.pack(">I", sequence) + body))
                    sequence += 1
        out.append(codec._chunk(b"IEND", b""))
        fp.write(b"".join(out))


def _png_bytes(image, params):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _fctl(sequence, size, duration):
    """An APNG frame control chunk: a full frame of ``size`` (IHDR's 8 bytes)
    shown ``duration`` ms, at (0, 0), disposal none, blend source."""
    from fractions import Fraction

    delay = Fraction(min(max(duration, 0.0), 65535000.0) / 1000).limit_denominator(65535)
    numerator, denominator = min(delay.numerator, 65535), delay.denominator
    body = struct.pack(">I", sequence) + bytes(size) + struct.pack(">IIHHBB", 0, 0, numerator, denominator, 0, 0)
    return codec._chunk(b"fcTL", body)


def _save_atomically(name, image, fmt, params, dir_fd=None):
    """Encode ``image`` into ``name`` through :func:`write_atomically`; ImageError on failure."""
    try:
        write_atomically(name, lambda stream: image.save(stream, format=fmt, **params), dir_fd=dir_fd)
    except PermissionError:
        raise ImageError(f"cannot write '{name}': permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot write '{name}': {exc.strerror or _one_line(exc)}") from exc
    except (ValueError, OverflowError, SyntaxError, struct.error, zlib.error) as exc:
        # Pillow's encoders report bad parameters or metadata this way.
        raise ImageError(f"cannot write '{name}': {_one_line(exc)}") from exc


def write_all(stream, data) -> None:
    """Write every byte of ``data`` to ``stream`` and flush, or raise OSError.

    An unbuffered stream (standard output under ``PYTHONUNBUFFERED=1``, a raw
    file) may take only part of a write, for example on a nearly full disk, and
    say so only in its return value: the rest is written, or the shortfall is
    an error, never silently dropped.
    """
    view = memoryview(data).cast("B")
    while view.nbytes:
        written = stream.write(view)
        if written is None:  # a non-blocking stream that took nothing: wait and retry
            import select

            select.select([], [stream], [], 1.0)
            continue
        if written <= 0:
            raise OSError(errno.EIO, "the output took no more bytes")
        view = view[written:]
    stream.flush()


#: The longest file name (in bytes) the usual file systems take (ext4, XFS, APFS, NTFS in UTF-16 units).
NAME_MAX = 255


def _temporary_stem(base: str, ext: str) -> str:
    """The start of a temporary file's name for ``base + ext``: hidden, marked, and
    short enough that the whole temporary name fits wherever the final name does
    (a 250-byte name would otherwise get a temporary name the file system refuses)."""
    suffix = os.fsencode(f"{_TMP_MARK}-{'0' * 8}{ext}")
    room = NAME_MAX - 1 - len(suffix)
    raw = os.fsencode(base)
    if len(raw) > room:
        raw = raw[: max(room, 0)]
    return "." + os.fsdecode(raw) + _TMP_MARK


def write_atomically(path, write: Callable[[BinaryIO], object], *, dir_fd: int | None = None) -> None:
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
    dir_fd : int, optional
        An opened folder (a file descriptor) to write ``path``'s last component
        in, instead of ``path``'s folder: the temporary file, its permissions
        and the rename all happen in that folder, wherever its name leads by
        now (``path`` still names the file in messages).

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
    at = {} if dir_fd is None else {"dir_fd": dir_fd}  # relative to the opened folder
    where, name = (folder, name) if dir_fd is None else ("", os.path.basename(name))
    try:
        keep_mode = stat.S_IMODE(os.stat(name, **at).st_mode)
    except OSError:
        keep_mode = None  # a new file: the umask decides, as for any new file
    # O_EXCL with a random name: never follow or clobber someone else's file;
    # 0o666 lets the umask apply (mkstemp would make it private, 0o600).
    for _ in range(100):
        temp = os.path.join(where, f"{_temporary_stem(base, ext)}-{secrets.token_hex(4)}{ext}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666, **at)
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
            os.chmod(temp, keep_mode, **at)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        temp = None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.remove(temp, **at)


def temporary_files(path) -> list[Path]:
    """The temporary files :func:`write_atomically` may have left for ``path``
    (when its process was killed mid-write), to be removed."""
    path = Path(path)
    base, ext = os.path.splitext(path.name)
    return sorted(path.parent.glob(f"{glob.escape(_temporary_stem(base, ext))}-*{glob.escape(ext)}"))


# ---------------------------------------------------------------------------
# 16-bit and float colour: the codec's images
#
# Pillow opens 16-bit colour and grey + alpha PNGs and TIFFs (and reads their
# headers, metadata and text) but decodes their pixels at 8 bits, and cannot
# open float colour TIFFs.  Their pixels go through imgconv.codec (libvips);
# their metadata is Pillow's, as for any image (see imgconv.codec).  Each
# helper takes one image: a PNG, or a TIFF page.


def _codec_mode(im, rawmode):
    """The codec mode of an opened, not yet decoded ``im`` whose pixels Pillow
    would decode at 8 bits (16-bit colour or grey + alpha), or None."""
    if im.format == "PNG":
        return codec.png_mode(rawmode, im.info)
    if im.format == "TIFF":
        return codec.tiff_mode(getattr(im, "tag_v2", {}))
    return None


def _codec_layout(mode):
    """The memory guard's Layout of a codec mode (the codec decodes straight
    into the array it returns)."""
    channels, dtype, alpha = _MODES[mode]
    size = channels * np.dtype(dtype).itemsize
    depth = "16-bit" if dtype is np.uint16 else "float"
    return memory.Layout(size, channels, alpha, size, f"{_LAYOUT_NAMES[channels]}, {depth}")


def _decode_codec_page(name, stream, page=0, pages=1):
    """Page ``page`` (0 for a PNG) of the file in ``stream``, decoded by the
    codec, in its canonical mode; ImageError naming ``name`` on failure."""
    try:
        array = codec.decode(stream, page=page)
    except codec.CodecMissing as exc:
        raise ImageError(f"cannot read '{name}': {exc}") from None
    except codec.CodecError as exc:
        where = f"page {page + 1} of {pages}: " if pages > 1 else ""
        raise ImageError(f"cannot read '{name}': {where}truncated or corrupt image data ({exc})") from None
    mode = _MODE_OF.get((_channels(array), array.dtype))
    if mode is None:
        raise ImageError(f"cannot read '{name}': unsupported pixel layout {array.shape[2:]} {array.dtype}")
    return array, mode


def _read_codec_image(name, stream, im, pages=1, stacklevel=4):
    """The ImageData of ``im`` (opened by Pillow, or a :class:`codec.TiffHeader`)
    whose pixels the codec decodes: every one of a TIFF's ``pages`` (already
    let through by the guard) in the first page's layout; metadata, text and
    orientation read as for any image."""
    tiff = im.format == "TIFF"
    if tiff:
        metadata = _metadata_or_warn(name, im)
    else:
        try:
            with Image.open(io.BytesIO(codec.png_metadata_copy(stream)), formats=["PNG"]) as copy:
                copy.load()
                metadata = _metadata_or_warn(name, copy)
        except _PILLOW_METADATA_ERRORS as exc:
            warnings.warn(f"'{name}': unreadable metadata ignored ({_one_line(exc)})", ImgconvWarning, stacklevel=stacklevel)
            metadata = _metadata_or_warn(name, Image.new("L", (1, 1)))
    associated = tiff and codec.tiff_associated_alpha(im.tag_v2)
    notes, frames, others = [], [], []
    mode = None
    for page in range(pages if tiff else 1):
        array, page_mode = _decode_codec_page(name, stream, page, pages)
        if mode is not None and page_mode != mode:
            others.append(page_mode)
            continue
        mode = page_mode
        frames.append(array)
    if associated and _MODES[mode][2]:
        # libvips divides the colour by the alpha as it decodes (as Pillow does for 8-bit RGBa)
        notes.append("associated (premultiplied) alpha is read as straight alpha (colour divided by alpha)")
    if others:
        notes.append(
            f"{len(others)} page{'s' if len(others) > 1 else ''} in another layout ({', '.join(sorted(set(others)))}) "
            f"than the first ({mode}) not read: every page is filtered and written in one layout"
        )
    kept = {"text": filemeta.read_text(im, stream), "encoding": filemeta.read_encoding(im, stream)}
    for note in notes:
        warnings.warn(f"'{name}': {note}", ImgconvWarning, stacklevel=stacklevel)
    return ImageData(
        pixels=frames[0],
        mode=mode,
        has_alpha=_MODES[mode][2],
        format=im.format,
        more_frames=tuple(frames[1:]),
        **metadata,
        **kept,
    )


def _read_unopened_tiff(name, stream, limit):
    """The ImageData of a TIFF Pillow cannot open whose layout the codec reads
    (float colour, 16-bit grey + alpha); None when it is not such a file.

    The guard counts every page from its directory before any is decoded
    (checked at each power of two: a file claiming a huge number of pages is
    refused after a few of its directories)."""
    try:
        header = codec.TiffHeader(stream)
    except _PILLOW_METADATA_ERRORS:
        return None
    mode = codec.tiff_mode(header.tag_v2)
    if mode is None:
        return None
    limit = limit.bound(_codec_layout(mode))
    (width, height), pages, next_check = header.size, 1, 2
    _refuse_bomb(name, (width, height), limit)
    try:
        for page_width, page_height in header.later_pages():
            width, height, pages = max(width, page_width), max(height, page_height), pages + 1
            if pages == next_check:
                _refuse_bomb(name, (width, height), limit, frames=pages)
                next_check *= 2
    except _PILLOW_METADATA_ERRORS as exc:
        raise ImageError(f"cannot read '{name}': page {pages + 1}: corrupt page directory ({_one_line(exc)})") from exc
    _refuse_bomb(name, (width, height), limit, frames=pages)
    return _read_codec_image(name, stream, header, pages, stacklevel=5)


def _image_for(array):
    """A Pillow image of ``array`` (canonical layout), or a
    :class:`codec.CodecImage` for the layouts Pillow cannot hold."""
    mode = _MODE_OF.get((_channels(array), array.dtype))
    if mode in codec.MODES:
        return codec.CodecImage(_owned(array), mode)
    from imgconv.engine import run

    if mode == "RGB" and run.pads_set(array):
        # Pillow's own RGB layout, pad bytes 255 (the kernels' output, or the decoded
        # image): its memory is the image's, no unpacking pass.
        rows, _, stride = run.padded_rows(array)
        image = _shared_image(_map_array(rows.reshape(array.shape[0], array.shape[1], stride), mode), mode)
        if image is not None:
            return image
    array = _owned(array)
    if mode in _UNPACKED_FOR_PILLOW:
        image = _in_numpy_storage(array, mode)
        if image is not None:
            return image
    return Image.fromarray(array)  # L, RGBA and I;16: Pillow shares the array's memory


#: The modes whose images for the encoder are made in numpy's memory: those
#: ``Image.fromarray`` copies into memory of its own (RGB and LA, Pillow's rows
#: being 4 bytes a pixel; F, which it maps only through another raw mode).
_UNPACKED_FOR_PILLOW = ("RGB", "LA", "F")


def _in_numpy_storage(array, mode):
    """The Pillow image ``Image.fromarray(array)`` gives (``mode``), its memory
    numpy's: ``array``'s own where Pillow's rows are laid out as numpy's (F),
    else a new array that Pillow's raw decoder unpacks ``array`` into, as
    ``fromarray`` does.  None where Pillow cannot do it (then fromarray does)."""
    dtype, pillow, numpy = _PILLOW_STORAGE[mode]
    if array.dtype != np.dtype(dtype):
        return None
    height, width = array.shape[:2]
    if pillow == numpy:
        core = _map_array(array, mode)
    else:
        storage = np.empty((height, width, pillow), dtype)  # every byte is unpacked into
        core = _map_array(storage, mode)
        if core is not None and not _unpack_into(core, array, mode):
            core = None
    return _shared_image(core, mode)


def _shared_image(core, mode):
    """A Pillow image of a mapped ``core`` (None: None)."""
    if core is None:
        return None
    image = Image.new(mode, (0, 0))._new(core)  # as Image.frombuffer wraps a mapped core
    image.readonly = 1  # its memory is shared: Pillow copies it before any change
    return image


def _unpack_into(core, array, mode):
    """Unpack ``array``'s packed rows into ``core`` with Pillow's raw decoder (what
    ``Image.frombytes`` runs); False where it did not take exactly all of them."""
    try:
        decoder = Image._getdecoder(mode, "raw", (mode, 0, 1))
    except (AttributeError, OSError, TypeError, ValueError):
        return False
    try:
        decoder.setimage(core, (0, 0) + tuple(core.size))
        consumed, code = decoder.decode(array.reshape(-1).view(np.uint8))
    except (OSError, TypeError, ValueError):
        return False
    finally:
        decoder.cleanup()
    return consumed < 0 and code == 0  # as frombytes checks: all rows done, no error
