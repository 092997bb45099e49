"""The guard against decompression bombs, sized by memory: how much memory reading
and filtering an image takes, and how much the machine has.

:mod:`imgconv.io` asks :meth:`Guard.check` before decoding any pixel, from the
size and pixel layout in the file's header.  An image is accepted when
:func:`memory_needed` fits in :func:`memory_budget` (what the platform reports
as available, less a margin); a header claiming more is refused at once, in
one line that gives the size, the memory needed and the way around it.  The
environment variable ``IMGCONV_MAX_PIXELS`` replaces the memory test by a pixel
count (0: no limit at all).

Imports only the standard library and :mod:`imgconv.errors`/:mod:`imgconv.choices`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from imgconv import choices
from imgconv.errors import ImageError

__all__ = [
    "MAX_PIXELS_ENV",
    "Layout",
    "Guard",
    "guard_from_environment",
    "memory_needed",
    "memory_budget",
    "available_memory",
    "format_bytes",
]

#: The environment variable that replaces the memory test by a pixel count (0: no limit).
MAX_PIXELS_ENV = "IMGCONV_MAX_PIXELS"

_FLOAT32 = 4  # bytes of one float32 sample


@dataclass(frozen=True)
class Layout:
    """What one decoded pixel takes, known from a file's header.

    Attributes
    ----------
    bytes_per_pixel : int
        Of the decoded array (:class:`imgconv.io.ImageData` ``pixels``):
        channels x bytes per sample (RGB 8-bit: 3; 16-bit grey: 2; RGBA float: 16).
    channels : int
        Samples per pixel, alpha included.
    has_alpha : bool
        Whether the last channel is alpha (the filter then takes another route).
    decode_bytes_per_pixel : int, optional
        What the decoder holds per pixel while the array is filled from it
        (Pillow keeps RGB in 4 bytes; a palette image converted to RGB holds
        both); default ``bytes_per_pixel``.
    name : str
        The layout in words, for messages: ``"RGB, 8-bit"``.
    """

    bytes_per_pixel: int
    channels: int = 1
    has_alpha: bool = False
    decode_bytes_per_pixel: int | None = None
    name: str = ""


def memory_needed(
    width: int,
    height: int,
    bytes_per_pixel: int,
    frames: int = 1,
    *,
    channels: int | None = None,
    float_copies: float = 0,
    decode_bytes_per_pixel: int | None = None,
) -> int:
    """The bytes that reading, filtering and writing an image take at their peak.

    With ``N = width * height`` pixels of ``b = bytes_per_pixel`` bytes, the
    path a file takes (``pipeline.filter_file``) holds, at its peak:

    - reading: the decoder's own image (``d = decode_bytes_per_pixel`` bytes a
      pixel) while it is copied into the decoded array (``b``), band by band
      (``io._pixels_of``: no full-size intermediate bytes);
    - filtering: the decoded input (``b``), the output in the image's dtype
      (``b``: the fused single-filter path writes it directly) and the
      ``float_copies`` full-size float32 images (``4 * channels`` bytes a
      pixel each) that the route keeps (:func:`imgconv.chain.float_copies`:
      0 for a single filter on an image without alpha, 2 to 4 for chains,
      alpha and combined kernels, 11 for linear light);
    - writing: the output (``b``) and the encoder's image (about ``d``); the
      input has been let go.

    So one frame needs ``N * (b + max(d, b + 4 * channels * float_copies))``.
    For ``frames`` frames held at once (inputs and outputs), the frames' own
    arrays multiply and the transient decode, float copies and encoder image
    stay one frame's: ``frames * N * b + N * max(d, frames * b + 4 * channels *
    float_copies)``.  Rows streaming through the kernels' rings, Python, numba
    and the codec's buffers are left to the margin of :func:`memory_budget`.

    Measured (docs/performance.md, "Memory"): ``imgconv apply gaussian`` on a
    100 MP RGB JPEG peaks at 2.35x its decoded size above the interpreter, as
    predicted (``b`` = 3, ``d`` = 4: 7/3); on a 500 MP grey PNG at 2.01x (2/1);
    chains, alpha and linear light on 9 MP within 15 % of the estimate.

    Parameters
    ----------
    width, height : int
        Of one frame, in pixels.
    bytes_per_pixel : int
        Of the decoded array (channels x bytes per sample).
    frames : int
        How many frames or pages are decoded and held at once.
    channels : int, optional
        Samples per pixel (sizes the float32 copies); default
        ``bytes_per_pixel`` (one byte a sample: the largest copies for its size).
    float_copies : float
        Full-size float32 copies of one frame that filtering holds beyond its
        input and output.
    decode_bytes_per_pixel : int, optional
        See :class:`Layout`; default ``bytes_per_pixel``.

    Returns
    -------
    int
        Bytes.

    Examples
    --------
    >>> memory_needed(10000, 10000, 3, decode_bytes_per_pixel=4) / 1e6  # 100 MP RGB, one filter
    700.0
    """
    pixels = int(width) * int(height)
    held = int(bytes_per_pixel)
    channels = held if channels is None else int(channels)
    decode = held if decode_bytes_per_pixel is None else int(decode_bytes_per_pixel)
    frames = max(1, int(frames))
    floats = _FLOAT32 * channels * float(float_copies)
    return int(frames * pixels * held + pixels * max(decode, frames * held + floats))


# ---------------------------------------------------------------------------
# what the machine has


def _read_number(path):
    try:
        with open(path, "rb") as stream:
            text = stream.read(64).strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None  # "max": no limit


def _meminfo_available(path="/proc/meminfo"):
    """Linux: MemAvailable (free memory plus what the kernel can reclaim without swapping)."""
    try:
        with open(path, "rb") as stream:
            for line in stream:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _inactive_file(stat_path, key):
    """Page cache a cgroup can drop (``inactive_file``), which its usage counts."""
    try:
        with open(stat_path, "rb") as stream:
            for line in stream:
                name, _, value = line.partition(b" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _own_cgroups(path="/proc/self/cgroup"):
    """{controller: path} of this process's cgroups ("" for the v2 unified one)."""
    found = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    for controller in parts[1].split(",") if parts[1] else [""]:
                        found[controller] = parts[2]
    except OSError:
        pass
    return found


def _cgroup_available(root="/sys/fs/cgroup"):
    """What the memory cgroups this process is in still allow (the tightest of
    its own and its parents'), or None without a limit.  Inside a container the
    cgroup's own folder is usually the mount's root, so both are looked at."""
    groups = _own_cgroups()
    # (folder, limit file, usage file, stat key): cgroup v2, then v1
    kinds = []
    if "" in groups:
        kinds.append((root, groups[""], "memory.max", "memory.current", b"inactive_file"))
    if "memory" in groups:
        v1 = os.path.join(root, "memory")
        kinds.append((v1, groups["memory"], "memory.limit_in_bytes", "memory.usage_in_bytes", b"total_inactive_file"))
    best = None
    for base, own, limit_name, usage_name, key in kinds:
        parts = [p for p in own.split("/") if p]
        folders = {os.path.join(base, *parts[:depth]) for depth in range(len(parts) + 1)}
        for folder in folders:
            limit = _read_number(os.path.join(folder, limit_name))
            if limit is None or limit >= 1 << 60:  # "max", or v1's "unlimited" (2**63 rounded to pages)
                continue
            usage = _read_number(os.path.join(folder, usage_name)) or 0
            usage -= _inactive_file(os.path.join(folder, "memory.stat"), key)
            left = max(0, limit - max(0, usage))
            best = left if best is None else min(best, left)
    return best


def _sysconf_available():
    """Free physical memory from sysconf (most Unixes; not macOS, which has only the total:
    half of it is taken then)."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    for name, share in (("SC_AVPHYS_PAGES", 1.0), ("SC_PHYS_PAGES", 0.5)):
        try:
            pages = os.sysconf(name)
        except (ValueError, OSError):
            continue
        if pages > 0 and page > 0:
            return int(pages * page * share)
    return None


def _windows_available():
    """Windows: GlobalMemoryStatusEx's available physical memory."""
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    try:
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return int(status.ullAvailPhys)
    except (AttributeError, OSError):
        pass
    return None


def available_memory() -> int | None:
    """The bytes this process can allocate without swapping, as the platform reports
    them now, or None where it reports nothing.

    Linux: ``MemAvailable`` of ``/proc/meminfo``, and no more than a memory
    cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``, the process's
    own and its parents') still allows; elsewhere ``sysconf`` (free pages) or,
    on Windows, ``GlobalMemoryStatusEx``.  Read afresh at each call (a few
    small files: microseconds).
    """
    found = []
    if sys.platform.startswith("linux"):
        found = [m for m in (_meminfo_available(), _cgroup_available()) if m is not None]
    if not found:
        other = _windows_available() if sys.platform == "win32" else _sysconf_available()
        found = [other] if other is not None else []
    return min(found) if found else None


def memory_budget() -> int:
    """The bytes an image may take: ``MEMORY_FRACTION`` of :func:`available_memory`
    less ``MEMORY_RESERVE_BYTES`` (see :mod:`imgconv.choices`); where the
    platform reports nothing, ``MEMORY_FALLBACK_BYTES`` is taken as available."""
    available = available_memory()
    if available is None:
        available = choices.MEMORY_FALLBACK_BYTES
    return max(0, int(available * choices.MEMORY_FRACTION) - choices.MEMORY_RESERVE_BYTES)


def format_bytes(count: float) -> str:
    """``1.5 GiB``, ``300 MiB``, ``27.9 GiB``, ``512 B``: a size for messages (3 digits)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.3g} {unit}"


# ---------------------------------------------------------------------------
# the guard


@dataclass(frozen=True)
class Guard:
    """How large an image :func:`imgconv.io.read_image` accepts.

    Attributes
    ----------
    max_pixels : int or None
        ``IMGCONV_MAX_PIXELS``: a pixel count replacing the memory test, 0 for no
        limit; None (the variable unset): sized by memory.
    float_copies : int or callable
        What the filter that follows holds (see :func:`memory_needed`), or a
        function of ``has_alpha`` giving it (alpha changes the filter's route).
    layout : Layout, optional
        The decoded layout of the image being read, once its header is known
        (:meth:`bound`); the size checks need it when sized by memory.
    """

    max_pixels: int | None = None
    float_copies: int | float | Callable[[bool], float] = 0
    layout: Layout | None = field(default=None, compare=False)

    def bound(self, layout: Layout) -> Guard:
        """This guard for an image of ``layout``."""
        return Guard(self.max_pixels, self.float_copies, layout)

    def needed(self, width: int, height: int, frames: int = 1, layout: Layout | None = None) -> int:
        """The bytes :func:`memory_needed` gives for this image and filter."""
        layout = layout or self.layout or Layout(4, 4)
        copies = self.float_copies(layout.has_alpha) if callable(self.float_copies) else self.float_copies
        return memory_needed(
            width,
            height,
            layout.bytes_per_pixel,
            frames,
            channels=layout.channels,
            float_copies=copies,
            decode_bytes_per_pixel=layout.decode_bytes_per_pixel,
        )

    def check(self, name: str, width: int, height: int, frames: int = 1, layout: Layout | None = None) -> None:
        """Refuse, before decoding, an image too large for the limit or the memory.

        Parameters
        ----------
        name : str
            The image as messages name it.
        width, height : int
            One frame's size, from the header.
        frames : int
            How many frames or pages will be decoded and held at once.
        layout : Layout, optional
            Default: the bound one.

        Raises
        ------
        ImageError
            One line: the size, the memory needed and available (or the pixel
            limit), and how to override.
        """
        pixels = int(width) * int(height) * max(1, int(frames))
        size = f"{width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
        if self.max_pixels is not None:
            if self.max_pixels and pixels > self.max_pixels:
                raise ImageError(
                    f"cannot read '{name}': {size} = {pixels} pixels exceeds the limit of {self.max_pixels} "
                    f"(a guard against decompression bombs); set {MAX_PIXELS_ENV} to a larger number, "
                    f"or 0 for no limit, to read it"
                )
            return
        layout = layout or self.layout
        needed = self.needed(width, height, frames, layout)
        budget = memory_budget()
        if needed > budget:
            kind = f" {layout.name}" if layout is not None and layout.name else ""
            decoded = pixels * (layout.bytes_per_pixel if layout is not None else 4)
            raise ImageError(
                f"cannot read '{name}': {size}{kind} = {pixels} pixels ({format_bytes(decoded)} decoded) needs about "
                f"{format_bytes(needed)} of memory to read and filter, more than the {format_bytes(budget)} "
                f"this machine can spare (a guard against decompression bombs); set {MAX_PIXELS_ENV} to a "
                f"pixel count to use as the limit instead, or 0 for no limit, to read it anyway"
            )


def guard_from_environment(float_copies: int | float | Callable[[bool], float] = 0) -> Guard:
    """The guard ``IMGCONV_MAX_PIXELS`` asks for (by memory where it is unset or empty).

    Raises
    ------
    ImageError
        When the variable is not a whole number >= 0.
    """
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return Guard(None, float_copies)
    try:
        limit = int(raw.strip())
    except ValueError:
        limit = -1
    if limit < 0:
        raise ImageError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, or 0 for no limit; got {raw!r}")
    return Guard(limit, float_copies)
