"""Every choice and limit more than one module shares, defined once.

Plain data and the small checks that go with it: border-mode names, out-ranges,
alpha policies, backends, strategies, combine modes, the dtypes the kernels
read, tolerances and size limits.  Imports nothing but numpy, so the CLI's
``list``/``show``/``--help`` can use it without starting numba.
"""

from __future__ import annotations

import numpy as np

# --- border modes (scipy.ndimage's names; the compiled codes are in engine/borders.py) ----------
MODE_NAMES = ("reflect", "mirror", "nearest", "wrap", "constant")

#: Other libraries' names for the same modes (OpenCV, numpy.pad, scipy's grid-*).
MODE_ALIASES = {
    "symmetric": "reflect",
    "grid-mirror": "reflect",
    "reflect101": "mirror",
    "reflect-101": "mirror",
    "reflect_101": "mirror",
    "replicate": "nearest",
    "edge": "nearest",
    "grid-wrap": "wrap",
    "periodic": "wrap",
    "grid-constant": "constant",
}


def canonical_mode(mode: str) -> str:
    """The scipy-style name of a border mode given by name or alias.

    >>> canonical_mode("Replicate")
    'nearest'

    Raises
    ------
    ValueError
        When ``mode`` is not a known mode name or alias.
    """
    if isinstance(mode, str):
        name = mode.strip().lower()
        name = MODE_ALIASES.get(name, name)
        if name in MODE_NAMES:
            return name
    raise ValueError(
        f"unknown border mode {mode!r} (use one of {', '.join(MODE_NAMES)}; aliases: {', '.join(MODE_ALIASES)})"
    )


# --- how a filter's results become pixels -----------------------------------------------------
#: clip to the dtype's range, take |v|, add half of full scale, stretch min..max to the full range
OUT_RANGES = ("clip", "abs", "offset", "normalize")

#: how the alpha channel is treated (see filtering.apply_filter)
ALPHA_POLICIES = ("premultiplied", "separate", "ignore")

#: how a filter's several kernels are combined
COMBINE_MODES = ("single", "magnitude", "sum-abs", "max")

#: channel counts whose last channel is alpha unless the caller says otherwise
ALPHA_CHANNEL_COUNTS = (2, 4)


def default_has_alpha(channels: int) -> bool:
    """Whether an image of ``channels`` channels carries alpha by default (grey+alpha, RGBA)."""
    return channels in ALPHA_CHANNEL_COUNTS


# --- how to convolve ---------------------------------------------------------------------------
BACKENDS = ("auto", "cpu", "cuda")
STRATEGIES = ("auto", "direct", "separable", "fft")

#: Image dtypes the compiled kernels read and write directly; others are converted to float32.
NATIVE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

#: At most this many separable pairs (kernel rank) for the separable strategy.
MAX_RANK = 3

# --- tolerances ------------------------------------------------------------------------------
#: A kernel whose sum is within this of 1 preserves flat areas (and so also filters alpha).
UNIT_SUM_TOLERANCE = 1e-6

#: A kernel whose sum is within this fraction of its absolute sum counts as summing to zero
#: (``normalize`` then refuses it rather than dividing by round-off).
ZERO_SUM_TOLERANCE = 1e-9

#: Filtered opacity at or below this (0..1) is fully transparent: colour is not divided by it.
TRANSPARENT_OPACITY = 1e-6

# --- limits ---------------------------------------------------------------------------------
#: The largest kernel side accepted from a catalog, a family, a kernel file or inline text.
MAX_KERNEL_SIDE = 1025

#: The most bytes read from a catalog file (the built-in one is under 10 KB).
MAX_CATALOG_BYTES = 16 * 1024 * 1024

#: The most times ``repeat`` may run a chain.
MAX_REPEAT = 100

#: The memory guard (imgconv.memory) lets an image use this fraction of the memory the
#: platform reports as available, less MEMORY_RESERVE_BYTES (numba compiling a kernel,
#: the encoder's buffers, what other programs allocate meanwhile).
MEMORY_FRACTION = 0.9
MEMORY_RESERVE_BYTES = 256 * 2**20

#: Taken as available where the platform reports nothing (neither /proc/meminfo, a
#: cgroup limit, sysconf nor Windows' GlobalMemoryStatusEx).
MEMORY_FALLBACK_BYTES = 4 * 2**30

# --- EXIF orientation --------------------------------------------------------------------------
#: Which frame filters act in: the image as a viewer displays it (its EXIF Orientation
#: applied; the kernels are turned, the stored pixels and the tag kept), or as stored.
ORIENTATION_FRAMES = ("displayed", "stored")


def check_kernel_side(shape, what: str = "the kernel") -> None:
    """Refuse a kernel larger than ``MAX_KERNEL_SIDE`` on either side (ValueError naming ``what``)."""
    if shape[0] > MAX_KERNEL_SIDE or shape[1] > MAX_KERNEL_SIDE:
        raise ValueError(
            f"{what} is {shape[0]}x{shape[1]}, larger than the {MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE} limit"
        )


# --- words ----------------------------------------------------------------------------------
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def parse_bool(text: str) -> bool | None:
    """``True``/``False`` for a yes/no word (``true``, ``off``, ``1`` ...), None for anything else."""
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


# --- image file formats ----------------------------------------------------------------------
#: The formats imgconv reads and writes, as Pillow names them.
FILE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")
