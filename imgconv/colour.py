"""sRGB and linear light: the transfer functions, and whether an embedded ICC
profile says the pixels are sRGB-encoded.

Filtering in linear light means decoding the stored (sRGB-encoded) values to
light intensities, filtering those, and encoding the result again: a blur then
mixes light the way light mixes, so the edge between a bright red and a bright
green does not turn into a dark band.

Only the tone curve matters for that: the primaries decide which colours the
three channels mean, not whether the values add up like light.  So a profile
whose tone curve is sRGB's (sRGB itself, Display P3, ...) is accepted; any
other curve (Adobe RGB's gamma 2.2, ProPhoto's 1.8, a linear scRGB profile)
would be misread, and :func:`check_srgb_profile` says so.

This module imports only numpy and the standard library.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["srgb_to_linear", "linear_to_srgb", "check_srgb_profile", "profile_description"]

# IEC 61966-2-1.  The decoding threshold 0.04045 and the encoding threshold
# 0.0031308 are where the two pieces of the curve meet.
_A = 0.055
_GAMMA = 2.4
_DECODE_KNEE = 0.04045
_ENCODE_KNEE = 0.0031308


def srgb_to_linear(values):
    """sRGB-encoded values (0..1) to linear light (0..1), as float32.

    Computed in float64 and rounded once, so that 16-bit images survive the
    round trip exactly.  Values outside 0..1 follow the curve mirrored through
    zero (``f(-x) = -f(x)``) and continued above 1, as scRGB extends sRGB.
    """
    x = np.asarray(values, dtype=np.float64)
    a = np.abs(x)
    linear = np.where(a <= _DECODE_KNEE, a / 12.92, ((a + _A) / (1.0 + _A)) ** _GAMMA)
    return (np.copysign(linear, x)).astype(np.float32)


def linear_to_srgb(values):
    """Linear light (0..1) to sRGB-encoded values (0..1), as float32; the
    inverse of :func:`srgb_to_linear`, extended the same way beyond 0..1."""
    y = np.asarray(values, dtype=np.float64)
    a = np.abs(y)
    encoded = np.where(a <= _ENCODE_KNEE, a * 12.92, (1.0 + _A) * a ** (1.0 / _GAMMA) - _A)
    return (np.copysign(encoded, y)).astype(np.float32)


class Encoder:
    """Linear light (float32) to 8-bit sRGB levels, by table: exactly what
    ``rint(clip(linear_to_srgb(v) * 255))`` gives (float32 products, as
    ``chain.apply_chain`` computes it), without the float64 power per pixel.

    The encoded level only changes at 255 thresholds (the curve rises).  The table is
    indexed by the top bits of a value's float32 pattern (``SHIFT``: 8 bits of mantissa,
    buckets narrow enough that each holds at most one threshold, which is checked); a
    bucket stores its level at its start and its threshold: the level is ``start level +
    (v >= threshold)``.  Values below the first threshold (negatives too) are level 0;
    beyond the table (above 1), 255.
    """

    SHIFT = 15
    TOP = 255

    def __init__(self):
        top = np.float32(self.TOP)

        def exact(v):
            encoded = linear_to_srgb(np.asarray(v, np.float32)) * top
            return np.clip(np.rint(encoded), 0, top).astype(np.int64)

        one = int(np.float32(1.0).view(np.int32))
        low = np.zeros(self.TOP, np.int64)  # per level k = 1..255: bit patterns with exact < k
        high = np.full(self.TOP, one, np.int64)  # ... and with exact >= k
        levels = np.arange(1, self.TOP + 1)
        while np.any(high - low > 1):
            middle = (low + high) // 2
            above = exact(middle.astype(np.int32).view(np.float32)) >= levels
            high = np.where(above, middle, high)
            low = np.where(above, low, middle)
        thresholds = high  # the first pattern of each level
        first = int(thresholds[0] >> self.SHIFT)
        count = int((one >> self.SHIFT) - first + 1)
        starts = ((np.arange(count) + first) << self.SHIFT).astype(np.int32)
        start_levels = exact(starts.view(np.float32))
        bucket = (thresholds >> self.SHIFT) - first
        inside = thresholds > starts[bucket].astype(np.int64)  # a threshold on a bucket's start is its start level
        if np.bincount(bucket[inside], minlength=count).max(initial=0) > 1:
            raise ValueError("sRGB encoding table: a bucket holds two thresholds")
        # No threshold: NaN, which no value reaches (v >= NaN is false; +inf >= +inf is not).
        limits = np.full(count, np.nan, np.float32)
        limits[bucket[inside]] = thresholds[inside].astype(np.int32).view(np.float32)
        # Index 0: below the table (level 0); count + 1: above it (255).
        self.levels = np.concatenate([[0], start_levels, [self.TOP]]).astype(np.uint8)
        self.limits = np.concatenate([[np.nan], limits, [np.nan]]).astype(np.float32)
        self.offset = first - 1
        self.count = count
        # Checked where the table could go wrong: every threshold and the value before it.
        probe = np.concatenate([thresholds, thresholds - 1]).astype(np.int32).view(np.float32)
        if not np.array_equal(self.encode(probe), exact(probe)):
            raise ValueError("sRGB encoding table disagrees with the curve")

    def encode(self, values, out=None):
        """8-bit levels of float32 ``values`` (any shape) into ``out`` (uint8)."""
        values = np.asarray(values, np.float32)
        index = values.view(np.int32) >> self.SHIFT
        index -= self.offset
        np.clip(index, 0, self.count + 1, out=index)
        step = values >= self.limits[index]
        result = np.take(self.levels, index, out=out)
        result += step
        return result


_encoder = None


def srgb_encoder() -> Encoder:
    """The one :class:`Encoder` (built on first use, a few milliseconds)."""
    global _encoder
    if _encoder is None:
        _encoder = Encoder()
    return _encoder


# ---------------------------------------------------------------------------
# ICC profiles: just enough of the format to read the tone curves and the name.

# How far (in linear light, 0..1) a profile's curve may stray from sRGB's and
# still count as sRGB: well under what 8 bits resolve, far below gamma 2.2's
# distance from sRGB (about 0.004).
_CURVE_TOLERANCE = 0.002
_SAMPLES = np.linspace(0.0, 1.0, 1025)


def _tags(profile):
    """{signature: (offset, size)} of the profile's tag table, or None if malformed."""
    if len(profile) < 132 or profile[36:40] != b"acsp":
        return None
    (count,) = struct.unpack(">I", profile[128:132])
    if count > 1000 or 132 + 12 * count > len(profile):
        return None
    tags = {}
    for i in range(count):
        signature, offset, size = struct.unpack(">4sII", profile[132 + 12 * i : 144 + 12 * i])
        if offset + size <= len(profile) and size >= 8:
            tags[signature] = (offset, size)
    return tags


def _tag_data(profile, tags, signature):
    if signature not in tags:
        return None
    offset, size = tags[signature]
    return bytes(profile[offset : offset + size])


def profile_description(profile) -> str | None:
    """The profile's name (its 'desc' tag), or None when it has none readable."""
    profile = bytes(profile)
    tags = _tags(profile)
    if not tags:
        return None
    data = _tag_data(profile, tags, b"desc")
    if data is None or len(data) < 12:
        return None
    try:
        if data[:4] == b"desc":  # ICC v2 textDescriptionType: ASCII
            (length,) = struct.unpack(">I", data[8:12])
            text = data[12 : 12 + length].split(b"\x00", 1)[0].decode("latin-1")
        elif data[:4] == b"mluc":  # ICC v4 multiLocalizedUnicodeType: UTF-16BE records
            count, record = struct.unpack(">II", data[8:16])
            if count < 1 or record < 12:
                return None
            length, offset = struct.unpack(">II", data[16 + 4 : 16 + 12])
            text = data[offset : offset + length].decode("utf-16-be")
        else:
            return None
    except (struct.error, UnicodeDecodeError):
        return None
    text = " ".join(text.split())
    return text or None


def _s15(raw):
    return struct.unpack(">i", raw)[0] / 65536.0


def _curve(data):
    """A TRC tag as a function sampled on _SAMPLES (encoded 0..1 -> linear), or None."""
    kind = data[:4]
    if kind == b"curv":
        (count,) = struct.unpack(">I", data[8:12])
        if count == 0:
            return _SAMPLES.copy()
        if count == 1:
            (gamma,) = struct.unpack(">H", data[12:14])
            return _SAMPLES ** (gamma / 256.0)
        if len(data) < 12 + 2 * count:
            return None
        table = np.frombuffer(data[12 : 12 + 2 * count], dtype=">u2").astype(np.float64) / 65535.0
        return np.interp(_SAMPLES, np.linspace(0.0, 1.0, count), table)
    if kind == b"para":
        (function,) = struct.unpack(">H", data[8:10])
        counts = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
        if function not in counts or len(data) < 12 + 4 * counts[function]:
            return None
        p = [_s15(data[12 + 4 * i : 16 + 4 * i]) for i in range(counts[function])]
        g = p[0]
        x = _SAMPLES
        with np.errstate(invalid="ignore", divide="ignore"):
            if function == 0:
                return x**g
            a, b = p[1], p[2]
            base = np.maximum(a * x + b, 0.0) ** g
            if function == 1:
                return np.where(x >= -b / a, base, 0.0)
            if function == 2:
                return np.where(x >= -b / a, base + p[3], p[3])
            c, d = p[3], p[4]
            if function == 3:
                return np.where(x >= d, base, c * x)
            return np.where(x >= d, base + p[5], c * x + p[6])
    return None


def _srgb_curve():
    return srgb_to_linear(_SAMPLES).astype(np.float64)


def check_srgb_profile(profile) -> str | None:
    """None when pixels carrying ``profile`` (ICC bytes) are sRGB-encoded, or
    can be linearised as if they were; otherwise one line saying why not.

    A profile counts as sRGB when each of its tone curves (rTRC, gTRC, bTRC, or
    kTRC for grey) is the sRGB curve within a small tolerance; a profile with no
    tone curves (built from lookup tables) only when its name says sRGB.
    """
    profile = bytes(profile)
    tags = _tags(profile)
    if tags is None:
        return "its ICC profile is malformed"
    name = profile_description(profile)
    called = f"'{name}'" if name else "without a name"
    space = profile[16:20]
    signatures = {b"RGB ": (b"rTRC", b"gTRC", b"bTRC"), b"GRAY": (b"kTRC",)}.get(space)
    if signatures is None:
        shown = space.decode("latin-1").strip() or "unknown"
        return f"its ICC profile {called} is for the {shown} colour space, not sRGB"
    found = [_tag_data(profile, tags, s) for s in signatures]
    if all(data is None for data in found):
        if name and "srgb" in name.lower():
            return None
        return f"its ICC profile {called} has no tone curve imgconv can read, and does not name sRGB"
    reference = _srgb_curve()
    for signature, data in zip(signatures, found):
        curve = None if data is None else _curve(data)
        if curve is None:
            return f"its ICC profile {called} has a {signature.decode()} tone curve imgconv cannot read"
        distance = float(np.nanmax(np.abs(curve - reference))) if np.all(np.isfinite(curve)) else np.inf
        if not distance <= _CURVE_TOLERANCE:
            return f"its ICC profile {called} has a tone curve other than sRGB's ({_describe(data)})"
    return None


def _describe(data):
    """A few words about a TRC tag: 'gamma 2.2', 'linear', 'a 1024-entry table'."""
    if data[:4] == b"curv":
        (count,) = struct.unpack(">I", data[8:12])
        if count == 0:
            return "linear"
        if count == 1:
            return f"gamma {struct.unpack('>H', data[12:14])[0] / 256.0:.3g}"
        return f"a {count}-entry table"
    if data[:4] == b"para":
        return f"gamma {_s15(data[12:16]):.3g}"
    return "unknown type"
