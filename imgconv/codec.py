"""The codec for the pixels Pillow cannot decode or encode exactly: 16-bit
colour and grey + alpha, and 32-bit float colour and grey + alpha, in PNG
and TIFF.

Pixels go through libvips (``pyvips``, with libvips from the
``pyvips-binary`` wheel), chosen by measurement against tifffile,
imagecodecs and OpenCV (docs/performance.md, "Image codecs"): the one
library that decodes and encodes both formats (TIFF in every compression),
the fastest PNG codec of them, 21 MiB installed.

Metadata never goes through libvips (it rewrites EXIF and cannot write EXIF
into a TIFF): :mod:`imgconv.io` reads it with Pillow, which parses these
files' headers and chunks fully, and writes it as Pillow writes it for any
other image.  PNG: the ancillary chunks Pillow's writer makes (ICC profile,
resolution, EXIF, XMP, text) go into libvips's file after ``IHDR``
(:func:`encode_png`'s ``before`` and ``after``).  TIFF: the tags (an :class:`PIL.Image.Exif`,
its EXIF and GPS directories included) are serialised by Pillow's IFD
writer and joined to the first directory libvips wrote (:func:`write_tiff`).

Everything here takes and returns numpy arrays and bytes; every failure is a
:class:`CodecError` with one line of text.  ``pyvips`` is imported on first
use, so images Pillow handles never load libvips.  libvips reports through
Python's ``logging`` (the ``pyvips`` logger, which has a ``NullHandler``):
nothing is printed.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np

__all__ = [
    "CodecError",
    "CodecMissing",
    "INSTALL_HINT",
    "MODES",
    "decode",
    "encode_png",
    "write_tiff",
    "png_chunks",
    "png_mode",
    "tiff_mode",
    "tiff_associated_alpha",
    "TiffHeader",
    "png_metadata_copy",
    "png_metadata_chunks",
    "png_level",
    "tiff_tags",
    "CodecImage",
]

#: What to install when the codec library is missing.
INSTALL_HINT = "pip install pyvips pyvips-binary"

# numpy dtype <-> libvips band format, for the sample types the codec carries.
_VIPS_FORMATS = {np.dtype(np.uint8): "uchar", np.dtype(np.uint16): "ushort", np.dtype(np.float32): "float"}
_DTYPES = {"uchar": np.uint8, "ushort": np.uint16, "float": np.float32}

# libvips's interpretation for (band format, channels); it decides the PNG colour
# type and the TIFF PhotometricInterpretation.
_INTERPRETATIONS = {
    ("uchar", 1): "b-w", ("uchar", 2): "b-w", ("uchar", 3): "srgb", ("uchar", 4): "srgb",
    ("ushort", 1): "grey16", ("ushort", 2): "grey16", ("ushort", 3): "rgb16", ("ushort", 4): "rgb16",
    ("float", 1): "b-w", ("float", 2): "b-w", ("float", 3): "srgb", ("float", 4): "srgb",
}

# PNG chunks that describe the pixels and belong to the encoder's file; every
# other (ancillary) chunk libvips writes is left out, the caller's go in.
_PNG_IMAGE_CHUNKS = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# TIFF tags libvips always writes that are metadata, not layout: replaced by the
# caller's (or left out, as Pillow leaves them out, when the caller has none).
_TIFF_WRITER_METADATA = (274, 282, 283, 296)  # Orientation, X/YResolution, ResolutionUnit

# A classic TIFF's offsets are 32-bit: libvips writes BigTIFF beyond this.
_CLASSIC_TIFF_LIMIT = 2**32 - 2**26

class CodecError(ValueError):
    """The codec could not decode or encode an image; the text is one line."""


class CodecMissing(CodecError):
    """The codec library (pyvips with libvips) is not installed or does not load."""


def _pyvips():
    try:
        import pyvips
    except (ImportError, OSError) as exc:  # OSError: pyvips found no libvips to load
        raise CodecMissing(f"16-bit and float colour need libvips through pyvips ({INSTALL_HINT})") from exc
    return pyvips


def _message(exc):
    """libvips's error as one line: its detail (the loaders' own words, several
    lines), else its summary."""
    lines = str(getattr(exc, "detail", "") or "").splitlines() or [str(getattr(exc, "message", "") or "")]
    text = "; ".join(dict.fromkeys(line.strip() for line in lines if line.strip())) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------------------
# decoding


def decode(stream, *, page: int = 0) -> np.ndarray:
    """Decode the PNG or TIFF in ``stream``, completely.

    Parameters
    ----------
    stream : binary file or io.BytesIO
        Seekable, positioned anywhere; a real file is read through its
        descriptor (its position is restored), a ``BytesIO`` from its buffer.
    page : int
        The TIFF page (0 for the first; PNG has one).

    Returns
    -------
    numpy.ndarray
        (H, W, C) for C >= 2, else (H, W); uint8, uint16 or float32 as
        stored; writable and C-contiguous.  A PNG's transparent colour key
        (``tRNS``) comes as an alpha channel.

    Raises
    ------
    CodecError
        For a truncated or corrupt file, a sample type other than 8 or
        16-bit integers or 32-bit float, or no libvips.
    """
    pyvips = _pyvips()
    options = {"page": page} if page else {}
    fd = position = None
    if isinstance(stream, io.BytesIO):
        source = pyvips.Source.new_from_memory(stream.getvalue())  # no copy: the bytes it was made from
    else:
        fd = stream.fileno()
        position = os.lseek(fd, 0, os.SEEK_CUR)
        source = pyvips.Source.new_from_descriptor(fd)
    try:
        image = pyvips.Image.new_from_source(source, "", access="sequential", fail_on="error", **options)
        kind = image.format
        if kind not in _DTYPES:
            raise CodecError(f"{kind} samples are not supported (8 or 16-bit integers, or 32-bit float)")
        array = np.ndarray(
            buffer=image.write_to_memory(),
            dtype=_DTYPES[kind],
            shape=(image.height, image.width, image.bands) if image.bands > 1 else (image.height, image.width),
        )
    except pyvips.Error as exc:
        raise CodecError(_message(exc)) from None
    finally:
        if fd is not None:
            os.lseek(fd, position, os.SEEK_SET)
    return array


# ---------------------------------------------------------------------------
# encoding


def _vips_image(pyvips, array):
    array = np.ascontiguousarray(array)
    channels = 1 if array.ndim == 2 else array.shape[2]
    kind = _VIPS_FORMATS.get(array.dtype)
    if kind is None:
        raise CodecError(f"cannot encode {array.dtype} samples")
    image = pyvips.Image.new_from_memory(array.data, array.shape[1], array.shape[0], channels, kind)
    return image.copy(interpretation=_INTERPRETATIONS[(kind, channels)])


def png_chunks(data):
    """(type, body) of each chunk of the PNG ``data``, in order, until ``IEND``."""
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        yield kind, data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IEND":
            return


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_png(array: np.ndarray, *, before=(), after=(), level: int = 6) -> bytes:
    """``array`` as a PNG file: 16-bit when uint16, and the ancillary chunks given.

    Parameters
    ----------
    array : numpy.ndarray
        (H, W) or (H, W, C), C in 2..4; uint8 or uint16.
    before, after : sequence of (bytes, bytes)
        Ancillary chunks as (type, body), placed after ``IHDR`` and after the
        image data: the file's metadata (libvips's own chunks are left out).
    level : int
        zlib compression level, 0..9 (6 is Pillow's and libvips's default).
        Rows are filtered adaptively (every filter tried per row, as libpng
        and Pillow do by default).

    Raises
    ------
    CodecError
    """
    pyvips = _pyvips()
    try:
        data = _vips_image(pyvips, array).pngsave_buffer(compression=int(level), filter="all", keep="none")
    except pyvips.Error as exc:
        raise CodecError(_message(exc)) from None
    out = [_PNG_SIGNATURE]
    for kind, body in png_chunks(data):
        if kind == b"IEND":
            out.extend(_chunk(k, b) for k, b in after)
        if kind in _PNG_IMAGE_CHUNKS:
            out.append(_chunk(kind, body))
        if kind == b"IHDR":
            out.extend(_chunk(k, b) for k, b in before)
    return b"".join(out)


def write_tiff(stream, pages, *, tags=None) -> None:
    """Write ``pages`` (one or more arrays) into ``stream`` as an uncompressed TIFF.

    Parameters
    ----------
    stream : binary file
        Written from where it is, in order (it need not seek).
    pages : sequence of numpy.ndarray
        Each (H, W) or (H, W, C), C in 2..4, uint8, uint16 or float32 (pages
        may differ).  Two channels are grey + alpha, four RGBA (unassociated
        alpha).
    tags : PIL.Image.Exif, optional
        Tags for the first page's directory, as Pillow's TIFF writer takes
        them (EXIF tags, the EXIF and GPS directories, XMP as tag 700, the ICC
        profile as 34675, resolution as 282, 283 and 296).  The encoder's
        Orientation and resolution tags are replaced by them (or dropped where
        they have none); its layout tags are never replaced.

    Raises
    ------
    CodecError
        For pixels too large for a classic TIFF (4 GiB) with tags or several
        pages, or an encoder error.
    """
    pyvips = _pyvips()
    size = sum(page.nbytes for page in pages)
    big = size > _CLASSIC_TIFF_LIMIT
    if big and (len(pages) > 1 or (tags is not None and len(tags))):
        raise CodecError(f"{size} bytes of pixels need a BigTIFF, which imgconv writes only as one page without metadata")
    try:
        encoded = [_vips_image(pyvips, page).tiffsave_buffer(compression="none", keep="none", bigtiff=big) for page in pages]
    except pyvips.Error as exc:
        raise CodecError(_message(exc)) from None
    pieces, length = _with_tags(encoded[0], tags)
    # Each later page's file goes after the previous one, its offsets moved by where it lands.
    places = []
    for data in encoded[1:]:
        length += length & 1
        places.append(length)
        length += len(data)
    directories = [place + _first_directory(data) for place, data in zip(places, encoded[1:])]
    pieces[-1] = pieces[-1][:-4] + struct.pack(_endian(encoded[0]) + "I", directories[0] if directories else 0)
    written = sum(len(piece) for piece in pieces)
    for index, (place, data) in enumerate(zip(places, encoded[1:])):
        following = directories[index + 1] if index + 1 < len(directories) else 0
        pieces.append(b"\x00" * (place - written))
        pieces.append(_moved(data, place, following))
        written = place + len(data)
    for piece in pieces:
        stream.write(piece)


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_OFFSET_TAGS = (273, 324)  # StripOffsets, TileOffsets: their values are offsets


def _endian(data):
    return "<" if bytes(data[:2]) == b"II" else ">"


def _first_directory(data):
    return struct.unpack(_endian(data) + "I", data[4:8])[0]


def _moved(data, place, following):
    """The one-page classic TIFF ``data`` as it must read placed at file offset
    ``place``: every offset in its directory moved by ``place``, its next
    directory ``following``."""
    endian = _endian(data)
    out = bytearray(data)
    first = _first_directory(data)
    (count,) = struct.unpack_from(endian + "H", out, first)
    for entry in range(first + 2, first + 2 + 12 * count, 12):
        tag, kind, number = struct.unpack_from(endian + "HHI", out, entry)
        width = _TYPE_SIZES.get(kind, 1)
        inline = width * number <= 4
        if tag in _OFFSET_TAGS:
            code = "H" if kind == 3 else "I"
            at = entry + 8 if inline else struct.unpack_from(endian + "I", out, entry + 8)[0]
            values = struct.unpack_from(f"{endian}{number}{code}", out, at)
            struct.pack_into(f"{endian}{number}{code}", out, at, *(value + place for value in values))
        if not inline:
            (offset,) = struct.unpack_from(endian + "I", out, entry + 8)
            struct.pack_into(endian + "I", out, entry + 8, offset + place)
    struct.pack_into(endian + "I", out, first + 2 + 12 * count, following)
    return bytes(out)


def _with_tags(data, tags):
    """The classic TIFF ``data`` with ``tags`` joined to its first directory, as
    (pieces to write in order, their length); the last piece ends with the
    directory's next-directory offset.

    The pixels stay where the encoder put them.  Pillow serialises ``tags`` as
    a directory placed after the file (values, sub-directories and their
    offsets included); a new first directory, after that, holds the encoder's
    entries and Pillow's, in tag order, and the header points at it.  The
    encoder's old first directory is left unused.
    """
    endian = _endian(data)
    (magic,) = struct.unpack(endian + "H", data[2:4])
    if magic != 42:  # BigTIFF: one page without tags (write_tiff refuses the rest)
        return [data], len(data)
    first = _first_directory(data)
    (count,) = struct.unpack(endian + "H", data[first : first + 2])
    table = data[first + 2 : first + 2 + 12 * count]
    following = data[first + 2 + 12 * count : first + 6 + 12 * count]
    entries = {}
    for start in range(0, 12 * count, 12):
        (tag,) = struct.unpack(endian + "H", table[start : start + 2])
        if tag not in _TIFF_WRITER_METADATA:
            entries[tag] = bytes(table[start : start + 12])
    place = len(data) + (len(data) & 1)
    blob = b""
    if tags is not None and len(tags):
        tags.endian = endian  # Pillow writes in the byte order it is told: the file's
        blob = tags.tobytes(place)[6 + 8 :]  # after b"Exif\0\0" and the 8-byte header
        (added,) = struct.unpack(endian + "H", blob[:2])
        for start in range(2, 2 + 12 * added, 12):
            (tag,) = struct.unpack(endian + "H", blob[start : start + 2])
            entries.setdefault(tag, blob[start : start + 12])  # the encoder's layout wins
    directory = place + len(blob)
    directory += directory & 1
    table = struct.pack(endian + "H", len(entries)) + b"".join(entries[tag] for tag in sorted(entries)) + bytes(following)
    pieces = [
        bytes(data[:4]) + struct.pack(endian + "I", directory),
        memoryview(data)[8:],
        b"\x00" * (place - len(data)) + blob + b"\x00" * (directory - place - len(blob)),
        table,
    ]
    return pieces, directory + len(table)


# ---------------------------------------------------------------------------
# the container: which files need the codec, and their metadata through Pillow

#: The codec's modes (see :mod:`imgconv.io`): (channels, dtype, has alpha).
MODES = {
    "LA;16": (2, np.uint16, True),
    "RGB;16": (3, np.uint16, False),
    "RGBA;16": (4, np.uint16, True),
    "LA;F": (2, np.float32, True),
    "RGB;F": (3, np.float32, False),
    "RGBA;F": (4, np.float32, True),
}

# Pillow's raw modes of the 16-bit PNGs it opens (and decodes at 8 bits).
_PNG_RAWMODES = {"RGB;16B": "RGB;16", "RGBA;16B": "RGBA;16", "LA;16B": "LA;16"}

# A PNG's chunks that describe its pixels (or frames): left out of the copy of a
# 16-bit PNG that Pillow reads the metadata from.
_PNG_PIXEL_CHUNKS = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"bKGD", b"sBIT", b"hIST", b"sPLT", b"acTL", b"fcTL", b"fdAT"}
)

# Pillow's PNG save parameters that are about pixels or compression, not metadata.
_PNG_PIXEL_PARAMS = frozenset(
    {"save_all", "append_images", "transparency", "bits", "optimize", "compress_level", "compress_type",
     "dictionary", "default_image", "duration", "loop", "disposal", "blend"}
)


def _values(value):
    return value if isinstance(value, tuple) else (value,)


def png_mode(rawmode: str, info) -> str | None:
    """The codec mode of a PNG Pillow opened with ``rawmode`` (and ``info``), or
    None where Pillow decodes it exactly."""
    mode = _PNG_RAWMODES.get(rawmode)
    if mode == "RGB;16" and "transparency" in info:
        return "RGBA;16"  # libvips turns the transparent colour into alpha
    return mode


def tiff_mode(tags) -> str | None:
    """The codec mode of a TIFF directory (Pillow's tag mapping, ``tag_v2``):
    16-bit or 32-bit float grey + alpha, RGB or RGBA; None for every other
    layout (Pillow's, as for any TIFF)."""
    try:
        samples = int(tags.get(277, 1))
        bits = {int(b) for b in _values(tags.get(258, 1))}
        sample_formats = {int(f) for f in _values(tags.get(339, 1))}
        photometric = tags.get(262)
    except (TypeError, ValueError):
        return None
    if bits == {16} and sample_formats <= {1}:
        depth = "16"
    elif bits == {32} and sample_formats == {3}:
        depth = "F"
    else:
        return None
    layout = {(1, 2): "LA", (2, 3): "RGB", (2, 4): "RGBA"}.get((photometric, samples))
    return f"{layout};{depth}" if layout else None


def tiff_associated_alpha(tags) -> bool:
    """Whether a TIFF directory's extra sample is associated (premultiplied) alpha."""
    return 1 in _values(tags.get(338, ()))


class TiffHeader:
    """The first directory of a TIFF that Pillow cannot open as an image (float
    colour, 16-bit grey + alpha), read by Pillow's TIFF directory code, with
    what imgconv's metadata readers use of an opened Pillow TIFF: ``format``,
    ``size``, ``info`` (dpi, ICC profile, XMP, as Pillow's TIFF plugin sets
    them), ``tag_v2`` and ``getexif()``.

    Raises SyntaxError (or struct.error, ValueError, ...) for what is not a TIFF.
    """

    format = "TIFF"

    def __init__(self, stream):
        from PIL import TiffImagePlugin

        self._stream = stream
        stream.seek(0)
        self._head = stream.read(8)
        self.tag_v2 = TiffImagePlugin.ImageFileDirectory_v2(self._head)
        stream.seek(self.tag_v2.next)
        self.tag_v2.load(stream)
        self.size = (int(self.tag_v2.get(256, 0)), int(self.tag_v2.get(257, 0)))
        self.info = {}
        for key, tag in (("icc_profile", 34675), ("xmp", 700)):
            if tag in self.tag_v2:
                self.info[key] = self.tag_v2[tag]
        xres, yres = self.tag_v2.get(282, 1), self.tag_v2.get(283, 1)
        unit = self.tag_v2.get(296)
        if xres and yres and unit in (2, 3, None):
            scale = 2.54 if unit == 3 else 1.0
            self.info["dpi"] = (float(xres) * scale, float(yres) * scale)

    def getexif(self):
        from PIL import Image

        exif = Image.Exif()
        self._stream.seek(0)
        exif.load_from_fp(self._stream)
        return exif

    def later_pages(self):
        """(width, height) of each page after the first, read from its directory
        (no pixel decoded); stops at a directory already seen (a loop)."""
        from PIL import TiffImagePlugin

        directory, seen = self.tag_v2, set()
        while directory.next and directory.next not in seen:
            seen.add(directory.next)
            self._stream.seek(directory.next)
            following = TiffImagePlugin.ImageFileDirectory_v2(self._head)
            following.load(self._stream)
            directory = following
            yield int(directory.get(256, 0)), int(directory.get(257, 0))


def png_metadata_copy(stream) -> bytes:
    """A small PNG holding the metadata chunks of the PNG in ``stream`` (every
    chunk but those of the pixels, before and after the image data, in order)
    around a 1x1 grey image: what Pillow reads a 16-bit PNG's metadata from
    without decoding its pixels (Pillow reads the chunks after the image data
    only as it decodes it)."""
    before, after = [], []
    seen_data = False
    stream.seek(len(_PNG_SIGNATURE))
    while True:
        header = stream.read(8)
        if len(header) < 8:
            break
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            break
        if kind in _PNG_PIXEL_CHUNKS:
            seen_data = seen_data or kind == b"IDAT"
            stream.seek(length + 4, io.SEEK_CUR)
            continue
        body = stream.read(length + 4)  # and its CRC
        if len(body) < length + 4:
            break  # truncated: the pixels' decoder says so
        (after if seen_data else before).append(header + body)
    pixel = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    pixel_data = _chunk(b"IDAT", zlib.compress(b"\x00\x00"))
    return b"".join([_PNG_SIGNATURE, pixel, *before, pixel_data, *after, _chunk(b"IEND", b"")])


def png_metadata_chunks(params) -> tuple[list, list]:
    """The metadata chunks Pillow's PNG writer makes from its save ``params``
    (ICC profile, dpi, EXIF, XMP and text in ``pnginfo``, and whatever else is
    not about pixels or compression), as (type, body) pairs before and after
    the image data: :func:`encode_png`'s ``before`` and ``after``."""
    from PIL import Image

    meta = {key: value for key, value in params.items() if key not in _PNG_PIXEL_PARAMS}
    if not meta:
        return [], []
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG", **meta)
    before, after, seen_data = [], [], False
    for kind, body in png_chunks(buffer.getvalue()):
        if kind == b"IDAT":
            seen_data = True
        elif kind not in (b"IHDR", b"IEND"):
            (after if seen_data else before).append((kind, body))
    return before, after


def png_level(params) -> int:
    """The zlib level for Pillow's PNG save ``params`` (``compress_level``, ``optimize``)."""
    if params.get("optimize"):
        return 9
    level = params.get("compress_level")
    return 6 if level is None or level < 0 else min(int(level), 9)


def tiff_tags(params):
    """The tags Pillow's TIFF writer adds for its save ``params`` (the ``exif``
    tags, text and XMP among them; ``icc_profile``; ``dpi``), as one
    :class:`PIL.Image.Exif` for :func:`write_tiff` (``params["exif"]`` itself,
    completed, where it is one)."""
    from PIL import Image

    tags = params.get("exif")
    if isinstance(tags, (bytes, bytearray)):
        loaded = Image.Exif()
        loaded.load(bytes(tags))
        tags = loaded
    if tags is None:
        tags = Image.Exif()
    if params.get("icc_profile"):
        tags[34675] = params["icc_profile"]
    dpi = params.get("dpi")
    if dpi:
        tags[282], tags[283], tags[296] = float(dpi[0]), float(dpi[1]), 2
    return tags


class CodecImage:
    """16-bit or float colour (or grey + alpha) pixels to save as PNG or TIFF:
    what ``PIL.Image.fromarray`` is for the layouts Pillow holds, with the
    ``mode``, ``size``, ``info`` and ``save`` that imgconv's writers use.

    ``save(fp, format, **params)`` takes Pillow's save parameters: the
    metadata ones (``icc_profile``, ``dpi``, ``exif``, ``pnginfo`` with XMP
    and text) are written as Pillow writes them (:func:`png_metadata_chunks`,
    :func:`tiff_tags`); ``compress_level`` sets the PNG compression;
    ``save_all`` with ``append_images`` (more of these) writes TIFF pages.
    CodecError (a ValueError) for anything else.
    """

    def __init__(self, array, mode):
        self.array = array
        self.mode = mode
        self.size = (array.shape[1], array.shape[0])
        self.info = {}

    def save(self, fp, format=None, **params):
        if format == "PNG":
            before, after = png_metadata_chunks(params)
            fp.write(encode_png(self.array, before=before, after=after, level=png_level(params)))
        elif format == "TIFF":
            pages = [self.array]
            if params.get("save_all"):
                pages += [getattr(other, "array", None) if isinstance(other, CodecImage) else np.asarray(other) for other in params.get("append_images", ())]
            write_tiff(fp, pages, tags=tiff_tags(params))
        else:
            raise CodecError(f"{format} cannot hold {self.mode} pixels")
