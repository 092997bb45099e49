"""What a file holds besides its pixels that Pillow reads but does not hand back to its
writers in a usable form: how it was compressed, and its text.  A helper of
:mod:`imgconv.io` (which alone calls it); Pillow and the standard library only.

Encoding (:class:`Encoding`, ``ImageData.encoding``)
----------------------------------------------------
- JPEG: the quantisation tables (natural order, as Pillow gives them), the chroma
  subsampling (``JpegImagePlugin.get_sampling``: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0),
  whether it is progressive, and the libjpeg quality its luminance table is
  closest to (for a lossy output in another format).
- WebP: lossless (a ``VP8L`` bitstream) or lossy (``VP8``), and for lossy the
  quality estimated from the VP8 frame header's quantiser indices.

What a written file gets (:func:`save_params`)
-----------------------------------------------
====== ======================================== =====================================
output default                                  ``quality=Q``
====== ======================================== =====================================
JPEG   from a JPEG: the input's own tables,     quality Q (libjpeg's standard tables
       subsampling and progressive mode;        scaled); a JPEG input's subsampling
       otherwise quality ``JPEG_QUALITY`` (95)  and progressive mode are kept,
       with 4:4:4 chroma                        otherwise 4:4:4
WebP   lossless, unless the input was lossy:    lossy at quality Q
       a lossy WebP or a JPEG gives lossy WebP
       at the input's estimated quality
others lossless (PNG, TIFF, BMP, GIF)           no effect
====== ======================================== =====================================

Text (:class:`Text`, ``ImageData.text``)
----------------------------------------
Entries are named by PNG keywords, the common vocabulary:

============== ===================== ===================== ==================
keyword        PNG                   JPEG (and GIF)        TIFF
============== ===================== ===================== ==================
Description    tEXt/zTXt/iTXt        COM, when no Comment  ImageDescription
Comment        tEXt/zTXt/iTXt        COM (read as Comment) ImageDescription,
                                                           when no Description
Author         tEXt/zTXt/iTXt        --                    Artist
Software       tEXt/zTXt/iTXt        --                    Software
Copyright      tEXt/zTXt/iTXt        --                    Copyright
any other      tEXt/zTXt/iTXt        --                    --
============== ===================== ===================== ==================

A PNG output gets every entry back in the kind of chunk it came in (a zTXt stays
compressed; an iTXt keeps its language tag, translated keyword and compression
flag; text from another format is tEXt, or iTXt where Latin-1 cannot hold it).
JPEG and GIF hold one comment, TIFF the four tags (non-ASCII text written as
UTF-8, as exiftool does); WebP and BMP hold no text.  An entry the output cannot
hold is named in a warning, unless the EXIF written with it already holds the
same text in its own tag (a TIFF's Artist read into EXIF and written to a JPEG).
The PNG XMP chunk and ImageMagick's raw EXIF/XMP/ICC profile chunks are not
text: :mod:`imgconv.io` carries those as metadata.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

__all__ = [
    "Encoding",
    "Text",
    "JPEG_QUALITY",
    "JPEG_SUBSAMPLING",
    "WEBP_FALLBACK_QUALITY",
    "read_encoding",
    "read_text",
    "save_params",
    "add_text",
    "png_info",
    "tiff_text_tags",
    "warn_text_lost",
    "check_quality",
    "jpeg_quality_of",
    "webp_quality_of",
]

#: JPEG quality for an input that is not a JPEG (Pillow's default of 75 visibly
#: degrades filtered output; 95 keeps the mean change near 1.5 levels).
JPEG_QUALITY = 95

#: Chroma subsampling for an input that is not a JPEG: 4:4:4 (0).  On the samples at
#: quality 95 it lowers the largest change from 50 to 21 levels (astronaut), 59 to 21
#: (coffee), for files about 30% larger; 4:2:0 halves colour resolution, which shows
#: on coloured edges, exactly where sharpening and edge filters put their results.
JPEG_SUBSAMPLING = 0

#: The quality of a lossy WebP whose VP8 header cannot be read (libwebp's default is
#: 75, Pillow's 80): on the high side, as a second generation of loss adds to the first.
WEBP_FALLBACK_QUALITY = 90

QUALITY_MIN, QUALITY_MAX = 1, 100

# Keywords that are not text: PNG's XMP, and ImageMagick's raw profiles of
# metadata io carries itself (as EXIF, XMP, ICC): copied, they would go stale.
_NOT_TEXT = frozenset(
    {
        "XML:com.adobe.xmp",
        "Raw profile type exif",
        "Raw profile type APP1",
        "Raw profile type xmp",
        "Raw profile type icc",
        "Raw profile type icm",
    }
)

# TIFF tag <-> PNG keyword; ImageDescription also takes a Comment when there is no Description.
_TIFF_TEXT_TAGS = {270: "Description", 315: "Author", 305: "Software", 33432: "Copyright"}
_TIFF_TAG_OF = {keyword: tag for tag, keyword in _TIFF_TEXT_TAGS.items()}

# JPEG: a COM segment holds at most this many bytes.
_JPEG_MAX_COMMENT = 65533
# GIF comment extensions are 255-byte sub-blocks; Pillow splits longer ones.


@dataclass(frozen=True)
class Encoding:
    """How the source file was compressed, to write a file of the same format the same way.

    Attributes
    ----------
    format : {"JPEG", "WEBP"}
    lossless : bool
        WebP: a VP8L (lossless) bitstream.  JPEG: False.
    quality : int or None
        The estimated quality (1..100): for JPEG the libjpeg quality whose tables
        are closest to the luminance table; for lossy WebP from the quantiser indices.
    qtables : tuple of tuple of int, or None
        JPEG quantisation tables, 64 values each, natural order (as Pillow reads and
        writes them); None where they cannot be reused (a CMYK JPEG).
    subsampling : int or None
        JPEG chroma subsampling as Pillow names it (0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0);
        None for grey, CMYK or a layout Pillow cannot write (4:4:0, 4:1:1).
    progressive : bool
        A progressive JPEG.
    """

    format: str
    lossless: bool = False
    quality: int | None = None
    qtables: tuple[tuple[int, ...], ...] | None = None
    subsampling: int | None = None
    progressive: bool = False


@dataclass(frozen=True)
class Text:
    """One text entry: a PNG keyword and its text, and how a PNG holds it.

    Attributes
    ----------
    keyword : str
        The PNG keyword (1-79 Latin-1 characters): ``Description``, ``Author``,
        ``Comment``... (JPEG COM reads as ``Comment``; TIFF tags as in the module table).
    value : str
    kind : {"tEXt", "zTXt", "iTXt"}
        The PNG chunk: as read from a PNG; for other sources tEXt, or iTXt when
        Latin-1 cannot hold the value.
    compressed : bool
        zTXt, or an iTXt with its compression flag set.
    language : str
        The iTXt language tag (``"de"``, ``"en-GB"``...).
    translated : str
        The iTXt translated keyword.
    """

    keyword: str
    value: str
    kind: str = "tEXt"
    compressed: bool = False
    language: str = ""
    translated: str = ""


def check_quality(quality) -> int | None:
    """``quality`` checked: None, or a whole number from 1 to 100 (ValueError otherwise)."""
    if quality is None:
        return None
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise ValueError(f"quality must be a whole number from {QUALITY_MIN} to {QUALITY_MAX}, got {quality!r}")
    return int(quality)


# ---------------------------------------------------------------------------
# reading: encoding

# The metadata errors of a damaged file: what reading raw chunks can trip over.
_RAW_ERRORS = (OSError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error, zlib.error)


def read_encoding(im, stream) -> Encoding | None:
    """How the opened (loaded) Pillow image ``im`` was compressed; None where nothing matters.

    ``stream`` is the seekable file it was opened from (WebP chunks are read from it).
    A damaged header gives None, never an exception.
    """
    with _kept_position(stream):
        try:
            if isinstance(im, JpegImagePlugin.JpegImageFile):
                return _jpeg_encoding(im)
            if im.format == "WEBP":
                return _webp_encoding(stream)
        except _RAW_ERRORS:
            return None
    return None


@contextlib.contextmanager
def _kept_position(stream):
    """Leave ``stream`` where Pillow left it (it may read more frames from it later)."""
    position = stream.tell()
    try:
        yield
    finally:
        stream.seek(position)


def _jpeg_encoding(im):
    progressive = bool(im.info.get("progressive") or im.info.get("progression"))
    tables = getattr(im, "quantization", None) or {}
    qtables = None
    if im.mode in ("L", "RGB") and tables:
        qtables = tuple(tuple(int(v) for v in tables[key]) for key in sorted(tables))
        if any(len(table) != 64 for table in qtables) or not 0 < len(qtables) < 5:
            qtables = None
    sampling = JpegImagePlugin.get_sampling(im) if im.mode == "RGB" else -1
    quality = jpeg_quality_of(qtables[0]) if qtables else None
    return Encoding(
        format="JPEG",
        quality=quality,
        qtables=qtables,
        subsampling=sampling if sampling in (0, 1, 2) else None,
        progressive=progressive,
    )


# libjpeg's standard luminance table (JPEG Annex K), natural order.
_STD_LUMINANCE = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ],
    dtype=np.int64,
)


def _libjpeg_tables():
    """The luminance table libjpeg makes for each quality 1..100 (jpeg_quality_scaling)."""
    quality = np.arange(1, 101)
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    return np.clip((_STD_LUMINANCE[None, :] * scale[:, None] + 50) // 100, 1, 255)


_LIBJPEG_TABLES = _libjpeg_tables()


def jpeg_quality_of(table) -> int:
    """The libjpeg quality (1..100) whose luminance table is closest to ``table``
    (natural order): exact for files libjpeg and Pillow wrote, an estimate for others."""
    values = np.asarray(table, dtype=np.int64)[:64]
    error = np.abs(np.log(_LIBJPEG_TABLES) - np.log(np.maximum(values, 1))[None, :]).sum(axis=1)
    return int(np.argmin(error)) + 1


def _riff_chunks(stream, start, end):
    """(fourcc, payload offset, payload size) of the RIFF chunks between ``start`` and ``end``."""
    position = start
    while position + 8 <= end:
        stream.seek(position)
        header = stream.read(8)
        if len(header) < 8:
            return
        fourcc, size = header[:4], struct.unpack("<I", header[4:])[0]
        yield fourcc, position + 8, size
        position += 8 + size + (size & 1)


def _webp_encoding(stream):
    """Lossless when every bitstream is VP8L; lossy (with an estimated quality) when one is VP8."""
    stream.seek(0, 2)
    end = stream.tell()
    stream.seek(0)
    head = stream.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    end = min(end, 8 + struct.unpack("<I", head[4:8])[0])
    kinds, first_vp8 = set(), None
    for fourcc, offset, size in _riff_chunks(stream, 12, end):
        frames = [(fourcc, offset, size)]
        if fourcc == b"ANMF":  # an animation frame: 16 bytes of frame header, then its chunks
            frames = list(_riff_chunks(stream, offset + 16, offset + size))
        for kind, at, length in frames:
            if kind in (b"VP8 ", b"VP8L"):
                kinds.add(kind)
                if kind == b"VP8 " and first_vp8 is None:
                    stream.seek(at)
                    first_vp8 = stream.read(min(length, 1024))  # the frame header is near its start
    if not kinds:
        return None
    if kinds == {b"VP8L"}:
        return Encoding(format="WEBP", lossless=True)
    quality = webp_quality_of(first_vp8) if first_vp8 else None
    return Encoding(format="WEBP", lossless=False, quality=quality)


class _BoolDecoder:
    """The VP8 boolean entropy decoder (RFC 6386, section 7.3)."""

    def __init__(self, data):
        if len(data) < 2:
            raise ValueError("VP8 partition too short")
        self.data, self.position = data, 2
        self.value = (data[0] << 8) | data[1]
        self.range, self.bit_count = 255, 0

    def bit(self, probability=128):
        split = 1 + (((self.range - 1) * probability) >> 8)
        big_split = split << 8
        if self.value >= big_split:
            result = 1
            self.range -= split
            self.value -= big_split
        else:
            result = 0
            self.range = split
        while self.range < 128:
            self.value <<= 1
            self.range <<= 1
            self.bit_count += 1
            if self.bit_count == 8:
                self.bit_count = 0
                if self.position < len(self.data):
                    self.value |= self.data[self.position]
                self.position += 1
        return result

    def literal(self, bits):
        value = 0
        for _ in range(bits):
            value = (value << 1) | self.bit()
        return value

    def optional(self, bits, signed=True):
        """A flag, then (when set) a ``bits``-bit magnitude and, if ``signed``, a sign."""
        if not self.bit():
            return 0
        value = self.literal(bits)
        return -value if signed and self.bit() else value


def webp_quality_of(vp8) -> int | None:
    """The quality (1..100) a lossy WebP was most likely encoded at, from its VP8 key frame
    header (``vp8``: the ``VP8 `` chunk's payload); None when it is not a readable key frame.

    libwebp sets each segment's quantiser to ``127 * (1 - c ** e)`` where ``c`` follows
    from the quality (``QualityToCompression``) and the exponents ``e`` of the segments
    straddle 1; the geometric mean of the finest and coarsest segments' ``1 - q / 127``
    gives ``c`` back.  Measured on Pillow's encoder over qualities 0..100 on photographs
    and noise: within 1 at 80 and above, and up to 5 below at lower qualities.
    """
    if len(vp8) < 12 or vp8[0] & 1 or vp8[3:6] != b"\x9d\x01\x2a":
        return None  # not a key frame
    reader = _BoolDecoder(vp8[10:])
    reader.literal(2)  # colour space, clamping type
    segment_quants = None
    if reader.bit():  # segmentation enabled
        update_map = reader.bit()
        if reader.bit():  # update segment feature data
            absolute = reader.bit()
            quants = [reader.optional(7) for _ in range(4)]
            for _ in range(4):
                reader.optional(6)  # loop filter strengths
            segment_quants = (absolute, quants)
        if update_map:
            for _ in range(3):
                reader.optional(8, signed=False)
    reader.literal(1 + 6 + 3)  # filter type, level, sharpness
    if reader.bit() and reader.bit():  # loop filter deltas enabled and updated
        for _ in range(8):
            reader.optional(6)
    reader.literal(2)  # partitions
    base = reader.literal(7)
    quants = [base]
    if segment_quants is not None:
        absolute, values = segment_quants
        quants = values if absolute else [base + delta for delta in values]
    fine = [1 - min(max(q, 0), 127) / 127 for q in quants]
    compression = (min(fine) * max(fine)) ** 0.5
    linear = compression**3
    quality = 100 * (linear * 1.5 if linear < 0.5 else (linear + 1) / 2)
    return min(max(round(quality), QUALITY_MIN), QUALITY_MAX)


# ---------------------------------------------------------------------------
# reading: text


def _decode(raw: bytes) -> str:
    """Bytes of unknown encoding (JPEG COM, TIFF ASCII tags): UTF-8 if they are, else Latin-1."""
    raw = raw.rstrip(b"\x00")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _plain(keyword, value):
    """A Text from a format without PNG's chunk kinds."""
    return Text(keyword, value) if _latin1(value) else Text(keyword, value, kind="iTXt")


def read_text(im, stream) -> tuple[Text, ...]:
    """The text entries of the opened Pillow image ``im`` (PNG chunks, JPEG COM, GIF
    comment, TIFF text tags), in file order.

    ``stream`` is the seekable file it was opened from: PNG chunks are read from it
    (Pillow does not say which kind of chunk a text came in).  Damaged text is left
    out, never an exception.
    """
    with _kept_position(stream):
        try:
            if im.format == "PNG":
                # Pillow has parsed the chunks (after the image data too, once loaded) but
                # not kept their kinds: walk them only when it found text, or when text may
                # follow image data it has not read (an animation's later frames, or pixels
                # left to the codec): 17 ms for the 4400 chunks of a 36 MB PNG.
                # Not ``im.text``: on an APNG it decodes every frame and moves the file.
                found = any(isinstance(value, str) for value in im.info.values())
                unread = bool(im.tile) or getattr(im, "is_animated", False)
                return tuple(_png_text(stream)) if found or unread else ()
            if isinstance(im, JpegImagePlugin.JpegImageFile):
                comments = (data for marker, data in im.applist if marker == "COM" and data.strip(b"\x00"))
                return tuple(_plain("Comment", _decode(data)) for data in comments)
            if im.format == "GIF":
                comment = im.info.get("comment")
                return (_plain("Comment", _decode(comment)),) if comment else ()
            if im.format == "TIFF":
                return tuple(_tiff_text(im))
        except _RAW_ERRORS:
            return ()
    return ()


def _tiff_text(im):
    tags = getattr(im, "tag_v2", {})
    for tag, keyword in _TIFF_TEXT_TAGS.items():
        value = _tag_text(tags.get(tag))
        if value and not (tag == 270 and layout_description(value)):
            yield _plain(keyword, value)


def layout_description(text) -> bool:
    """Whether an ImageDescription is a writer's record of the array layout, not a
    description: tifffile's ``{"shape": [3, H, W]}`` JSON and ImageJ's ``ImageJ=...``
    header.  Copied to a file laid out anew (interleaved, fewer pages) it would
    describe the wrong shape, so it is carried neither as text nor as a tag."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    if not isinstance(text, str):
        return False
    text = text.strip()
    return (text.startswith("{") and '"shape"' in text[:64]) or text.startswith("ImageJ=")


def _tag_text(value):
    """A TIFF or EXIF ASCII tag's text, or None.  Pillow decodes these as Latin-1;
    most writers put UTF-8 there, so text that decodes as UTF-8 is taken as UTF-8."""
    if isinstance(value, str):
        try:
            value = value.encode("latin-1")
        except UnicodeEncodeError:
            return value.rstrip("\x00")
    return _decode(value) if isinstance(value, bytes) else None


def _inflate(data, budget):
    """zlib data decompressed to at most ``budget`` bytes; ValueError beyond (a text bomb)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, budget + 1)
    if len(out) > budget:
        raise ValueError("decompressed text chunk too large")
    return out


def _png_text(stream):
    """Every tEXt, zTXt and iTXt chunk of a PNG, before and after the image data.

    Decompressed text is bounded as Pillow bounds it (``PngImagePlugin.MAX_TEXT_CHUNK``
    per chunk, ``MAX_TEXT_MEMORY`` in all): a chunk beyond either is left out.
    """
    stream.seek(0)
    if stream.read(8) != b"\x89PNG\r\n\x1a\n":
        return
    budget = PngImagePlugin.MAX_TEXT_MEMORY or (1 << 62)
    per_chunk = PngImagePlugin.MAX_TEXT_CHUNK or (1 << 62)
    while True:
        header = stream.read(8)
        if len(header) < 8:
            return
        length, kind = struct.unpack(">I", header[:4])[0], header[4:]
        if kind == b"IEND":
            return
        if kind not in (b"tEXt", b"zTXt", b"iTXt") or length > per_chunk * 2:
            stream.seek(length + 4, 1)  # the data and the CRC
            continue
        data = stream.read(length)
        stream.seek(4, 1)
        if len(data) < length:
            return
        try:
            entry = _png_text_chunk(kind.decode("ascii"), data, min(per_chunk, budget))
        except (ValueError, zlib.error, UnicodeDecodeError):
            continue  # a damaged or oversized chunk: left out
        if entry is None:
            continue
        budget -= len(entry.value)
        if entry.keyword not in _NOT_TEXT:
            yield entry


def _png_text_chunk(kind, data, budget):
    keyword, sep, rest = data.partition(b"\x00")
    if not sep or not 0 < len(keyword) < 80:
        return None
    keyword = keyword.decode("latin-1")
    if kind == "tEXt":
        return Text(keyword, rest.decode("latin-1"))
    if kind == "zTXt":
        if not rest or rest[0] != 0:
            return None  # compression method 0 (zlib) is the only one
        return Text(keyword, _inflate(rest[1:], budget).decode("latin-1"), kind="zTXt", compressed=True)
    # iTXt: compression flag, method, language tag \0, translated keyword \0, text
    if len(rest) < 2:
        return None
    flag, method = rest[0], rest[1]
    language, sep1, rest = rest[2:].partition(b"\x00")
    translated, sep2, text = rest.partition(b"\x00")
    if not (sep1 and sep2) or (flag and method != 0):
        return None
    if flag:
        text = _inflate(text, budget)
    return Text(
        keyword,
        text.decode("utf-8"),
        kind="iTXt",
        compressed=bool(flag),
        language=language.decode("ascii", "replace"),
        translated=translated.decode("utf-8"),
    )


# ---------------------------------------------------------------------------
# writing


def save_params(fmt, mode, encoding: Encoding | None, quality: int | None) -> dict:
    """Pillow save parameters for compression: ``fmt`` written from an input encoded as
    ``encoding`` (None: not a JPEG or WebP, or no input), at ``quality`` when given.

    ``mode`` is the Pillow mode of the image to save (JPEG tables need one table
    for grey and two for colour).
    """
    quality = check_quality(quality)
    same = encoding if encoding is not None and encoding.format == fmt else None
    if fmt == "JPEG":
        params = {}
        colour = mode != "L"
        if same is not None and same.progressive:
            params["progressive"] = True
        if colour:
            kept = same.subsampling if same is not None else None
            params["subsampling"] = JPEG_SUBSAMPLING if kept is None else kept
        tables = same.qtables if same is not None else None
        if quality is None and tables and len(tables) >= (2 if colour else 1):
            params["qtables"] = [list(t) for t in tables]  # used as they are (Pillow passes quality -1)
        else:
            params["quality"] = JPEG_QUALITY if quality is None else quality
        return params
    if fmt == "WEBP":
        if quality is None and encoding is not None and not encoding.lossless:
            quality = encoding.quality if encoding.quality is not None else WEBP_FALLBACK_QUALITY
        if quality is None:
            # Lossless, and exact: keep the colour under fully transparent pixels.
            # For lossless WebP, quality is encoder effort: 25 with method 1 gives
            # files as small as the default (80, 4) in about a third of the time.
            return {"lossless": True, "exact": True, "quality": 25, "method": 1}
        return {"quality": quality, "method": 4, "exact": True}
    return {}


def _exif_text(exif):
    """The text tags (by PNG keyword) the EXIF bytes ``exif`` hold in their first IFD."""
    if not exif:
        return {}
    tags = Image.Exif()
    try:
        tags.load(exif)
        found = {keyword: _tag_text(tags.get(tag)) for tag, keyword in _TIFF_TEXT_TAGS.items()}
        return {keyword: value for keyword, value in found.items() if value is not None}
    except _RAW_ERRORS:
        return {}


def add_text(fmt, params: dict, text, warn) -> None:
    """Add the Pillow save parameters that write ``text`` (a sequence of :class:`Text`)
    into a ``fmt`` file to ``params`` (which holds the metadata parameters already);
    ``warn`` what the format cannot hold.

    PNG: chunks added to ``params["pnginfo"]`` (made if absent).  TIFF: tags added to
    ``params["exif"]`` (an ``Image.Exif``, made if absent).  JPEG and GIF: ``comment``.
    """
    if not text:
        return
    if fmt == "PNG":
        params["pnginfo"] = png_info(text, params.get("pnginfo"))
        return
    if fmt == "TIFF":
        tags, lost = tiff_text_tags(text)
        if tags:
            exif = params.get("exif")
            if exif is None:
                exif = params["exif"] = Image.Exif()
            for tag, value in tags.items():
                exif[tag] = value
    elif fmt in ("JPEG", "GIF"):
        comment = _comment_choice(text)
        if comment is not None:
            encoded = comment.value.encode("utf-8")
            if fmt == "JPEG" and len(encoded) > _JPEG_MAX_COMMENT:
                warn(f"the {comment.keyword} text of {len(encoded)} bytes does not fit a JPEG comment; not written")
            else:
                params["comment"] = encoded
        lost = [entry for entry in text if entry is not comment]
    else:
        lost = list(text)
    exif = params.get("exif")
    warn_text_lost(fmt, lost, warn, exif=exif if isinstance(exif, bytes) else None)


def png_info(text, info=None) -> PngImagePlugin.PngInfo:
    """``info`` (a new ``PngInfo`` if None) with a chunk for each entry of ``text``, of the
    kind it came in (tEXt, zTXt, iTXt with its language, translated keyword and
    compression); iTXt for text Latin-1 cannot hold.  ``info.chunks`` are the chunks."""
    if info is None:
        info = PngImagePlugin.PngInfo()
    for entry in text:
        if entry.kind == "iTXt" or not _latin1(entry.value):
            info.add_itxt(entry.keyword, entry.value, entry.language, entry.translated, zip=entry.compressed)
        else:
            info.add_text(entry.keyword, entry.value, zip=entry.compressed)
    return info


def tiff_text_tags(text) -> tuple[dict, list]:
    """The TIFF tags that hold ``text`` ({tag: str, or UTF-8 bytes where not ASCII}) and the
    entries they cannot hold: the first Description, Author, Software and Copyright become
    ImageDescription, Artist, Software and Copyright; a Comment is the ImageDescription
    when there is no Description."""
    chosen = {}
    for entry in text:
        if entry.keyword in _TIFF_TAG_OF and entry.keyword not in chosen and entry.value:
            chosen[entry.keyword] = entry
    if "Description" not in chosen:
        comment = next((e for e in text if e.keyword == "Comment" and e.value), None)
        if comment is not None:
            chosen["Description"] = comment
    tags = {_TIFF_TAG_OF[keyword]: _tiff_value(entry.value) for keyword, entry in chosen.items()}
    placed = {id(entry) for entry in chosen.values()}
    return tags, [entry for entry in text if id(entry) not in placed]


def _tiff_value(value):
    return value if value.isascii() else value.encode("utf-8")


_HOLDS = {
    "JPEG": " (it holds one comment)",
    "GIF": " (it holds one comment)",
    "TIFF": " (it holds Description, Author, Software, Copyright)",
}


def warn_text_lost(where, lost, warn, *, exif=None) -> None:
    """``warn`` once, naming the keywords of ``lost`` (entries ``where`` cannot hold: a
    format name, or a writer such as "the 16-bit PNG writer"), leaving out those the
    EXIF bytes ``exif`` written with them hold in the same tag with the same text."""
    held = _exif_text(exif)
    lost = [entry for entry in lost if held.get(entry.keyword) != entry.value]
    if lost:
        names = ", ".join(dict.fromkeys(entry.keyword for entry in lost))
        warn(f"{where} cannot hold the text {names} of the input{_HOLDS.get(where, '')}; not written")


def _latin1(value):
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _comment_choice(text):
    """The entry a single comment (JPEG COM, GIF) holds: the first Comment, else the first Description."""
    for keyword in ("Comment", "Description"):
        for entry in text:
            if entry.keyword == keyword and entry.value:
                return entry
    return None
