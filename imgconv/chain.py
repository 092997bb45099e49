"""Chains: several filters applied in order, with one decode and one encode.

Syntax (what ``imgconv apply``, ``batch``, ``show`` and ``gallery`` accept)::

    CHAIN  := STEP ( "," STEP )*
    STEP   := NAME ( ":" KEY "=" VALUE )*         a catalog filter and its parameters
            | "[" MATRIX "]" ( ":" KEY "=" VALUE )*  an inline kernel: "[0 -1 0; -1 5 -1; 0 -1 0]"
            | "@" FILE ( ":" KEY "=" VALUE )*       a kernel file (.mat, .npy, CSV, ImageMagick text)

A ``KEY=VALUE`` item after a comma adds a parameter to the step before it, so
``gaussian:sigma=2,radius=6,sharpen`` is ``gaussian`` with two parameters, then
``sharpen``.  Commas inside ``[...]`` belong to the matrix.  Kernel steps take
``normalize=true`` (divide by the sum) and ``scale=X``.

How a chain runs (:func:`apply_chain`): the image is converted once to float32
in 0..1 (``--linear``: decoded from sRGB to linear light), every step runs on
that with no rounding or clipping in between (so a chain of linear filters is
exactly its equivalent kernel, up to the borders), ``repeat`` runs the whole
chain again, ``strength`` blends the result with the original
(``original + strength * (result - original)``: 0 is the original, 1 the
result, above 1 extrapolates as unsharp masking does), and only then is the
result encoded, rounded and clipped back to the input's dtype.  A single step
with no repeat, strength or linear light is exactly :func:`imgconv.apply_filter`.

This module does not import numba; computing does.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from imgconv.catalog import Filter, Kernel, parse_assignments
from imgconv.errors import CatalogError, ImageError, ImgconvError

__all__ = ["Step", "Chain", "parse_chain", "split_chain", "apply_chain", "filter_image", "compose", "MAX_REPEAT"]

#: The most times ``repeat`` may run a chain.
MAX_REPEAT = 100

_KERNEL_STEP_PARAMS = ("normalize", "scale")
_KEY_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*=")
_TRAILING_PARAMS = re.compile(r"((?::[A-Za-z_][A-Za-z0-9_-]*=[^:]*)+)\Z")


@dataclass(frozen=True)
class Step:
    """One filter of a chain: the resolved filter and the text it came from.

    ``loaded`` is the :class:`imgconv.kernelfile.LoadedKernel` of an inline or
    file kernel (None for catalog filters)."""

    filter: Filter
    text: str
    loaded: object = None


@dataclass(frozen=True)
class Chain:
    """Filters applied in order (``steps``), ``repeat`` times, blended with
    the original by ``strength``, in linear light when ``linear``."""

    steps: tuple
    repeat: int = 1
    strength: float = 1.0
    linear: bool = False

    def __post_init__(self):
        steps = tuple(s if isinstance(s, Step) else Step(s, s.name) for s in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps:
            raise ValueError("a chain needs at least one filter")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or not 1 <= self.repeat <= MAX_REPEAT:
            raise ValueError(f"repeat must be a whole number from 1 to {MAX_REPEAT}, got {self.repeat!r}")
        strength = self.strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
        object.__setattr__(self, "strength", float(strength))

    @classmethod
    def of(cls, flt, **options):
        """A chain of the one filter ``flt``."""
        return cls((Step(flt, flt.name),), **options)

    @property
    def name(self) -> str:
        """The chain as text, e.g. ``gaussian:sigma=2,sharpen``."""
        return ",".join(step.text for step in self.steps)

    @property
    def filters(self) -> tuple:
        return tuple(step.filter for step in self.steps)

    @property
    def kernels(self) -> tuple:
        """Every kernel of every step, in order."""
        return tuple(k for step in self.steps for k in step.filter.kernels)

    @property
    def is_plain(self) -> bool:
        """One filter, once, at full strength, not in linear light."""
        return len(self.steps) == 1 and self.repeat == 1 and self.strength == 1.0 and not self.linear

    def describe(self) -> str:
        """The chain with its options, for titles: ``blur then sharpen (2 times, strength 0.5)``."""
        text = " then ".join(step.text for step in self.steps)
        extras = []
        if self.repeat != 1:
            extras.append(f"{self.repeat} times")
        if self.strength != 1.0:
            extras.append(f"strength {self.strength:g}")
        if self.linear:
            extras.append("linear light")
        return text + (" (" + ", ".join(extras) + ")" if extras else "")

    def equivalent(self, out_range=None):
        """``(kernel, None)``: the single kernel that does what the chain does
        (up to the borders), or ``(None, reason)`` when the chain is not linear.

        ``out_range`` replaces the last step's, as for :func:`apply_chain`."""
        for index, step in enumerate(self.steps):
            flt = step.filter
            where = f"'{step.text}'"
            mapping = out_range if (out_range is not None and index == len(self.steps) - 1) else flt.out_range
            if flt.combine != "single":
                return None, f"{where} combines {len(flt.kernels)} kernels by {flt.combine}"
            if flt.bias:
                return None, f"{where} adds a bias of {flt.bias:g}"
            if mapping != "clip":
                return None, f"{where} maps its result by out-range {mapping}"
        matrix = None
        for _ in range(self.repeat):
            for step in self.steps:
                kernel = step.filter.kernels[0].matrix
                matrix = kernel if matrix is None else compose(matrix, kernel)
        if self.strength != 1.0:
            blended = matrix * self.strength
            blended[matrix.shape[0] // 2, matrix.shape[1] // 2] += 1.0 - self.strength
            matrix = blended
        return Kernel(matrix), None


# ---------------------------------------------------------------------------
# composing kernels


def _full_convolve(a, b):
    """The full 2-D convolution of two small arrays (float64)."""
    if a.size > b.size:
        a, b = b, a
    shape = (a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1)
    if a.size * b.size > 4_000_000:
        fshape = [1 << (n - 1).bit_length() for n in shape]
        spectrum = np.fft.rfft2(a, fshape) * np.fft.rfft2(b, fshape)
        return np.fft.irfft2(spectrum, fshape)[: shape[0], : shape[1]]
    out = np.zeros(shape)
    for (u, v), weight in np.ndenumerate(a):
        if weight:
            out[u : u + b.shape[0], v : v + b.shape[1]] += weight * b
    return out


def compose(first, second):
    """The kernel of convolving with ``first`` and then ``second``, centred as
    imgconv centres kernels (element ``shape // 2``), so that for any image
    ``convolve(convolve(f, first), second) == convolve(f, compose(first, second))``
    away from the borders (and everywhere in ``wrap`` mode)."""
    from imgconv.kernelfile import centre_on

    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    full = _full_convolve(first, second)
    origin = (first.shape[0] // 2 + second.shape[0] // 2, first.shape[1] // 2 + second.shape[1] // 2)
    return centre_on(full, origin)


# ---------------------------------------------------------------------------
# parsing


def split_chain(text) -> list[str]:
    """The comma-separated items of ``text``, keeping commas inside [...]."""
    items, depth, current = [], 0, []
    for char in str(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def _group(texts):
    """Items grouped into steps: a ``KEY=VALUE`` item joins the step before it."""
    steps = []
    for text in texts:
        items = split_chain(text)
        if len(items) == 1 and not items[0].strip():
            raise CatalogError("empty chain: give a filter name, [matrix] or @file")
        for item in items:
            item = item.strip()
            if not item:
                raise CatalogError(f"empty step in chain {text!r} (two commas in a row, or one at an end)")
            if _KEY_VALUE.match(item) and ":" not in item.split("=", 1)[0] and steps and not item.startswith(("@", "[")):
                steps[-1].append(item)
            else:
                steps.append([item])
    return steps


def _split_params(head, extra):
    """``name:k=v:k=v`` -> (name, ["k=v", ...]) plus the items in ``extra``."""
    name, _, rest = head.partition(":")
    pairs = [p for p in rest.split(":")] if rest else []
    return name.strip(), pairs + list(extra)


def _kernel_options(pairs, where):
    values = parse_assignments(pairs)
    normalize, scale = False, 1.0
    for key, value in values.items():
        if key == "normalize":
            word = value.strip().lower()
            if word not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise CatalogError(f"{where}: normalize must be true or false, got {value!r}")
            normalize = word in ("true", "yes", "1", "on")
        elif key == "scale":
            try:
                scale = float(value)
            except ValueError:
                scale = math.nan
            if not math.isfinite(scale):
                raise CatalogError(f"{where}: scale must be a finite number, got {value!r}")
        else:
            raise CatalogError(f"{where}: unknown parameter {key!r}; a kernel step takes {', '.join(_KERNEL_STEP_PARAMS)}")
    return normalize, scale


def _matrix_step(item, extra):
    from imgconv.kernelfile import parse_inline_kernel

    depth = 0
    for end, char in enumerate(item):
        depth += char == "["
        depth -= char == "]"
        if depth == 0:
            break
    else:
        raise CatalogError(f"step {item!r}: '[' without its closing ']'")
    body, rest = item[1:end], item[end + 1 :]
    if rest and not rest.startswith(":"):
        raise CatalogError(f"step {item!r}: expected ':KEY=VALUE' after ']', got {rest!r}")
    pairs = [p for p in rest[1:].split(":")] if rest else []
    label = "[" + " ".join(body.split()) + "]"
    loaded = parse_inline_kernel(body, label=f"kernel {label}")
    normalize, scale = _kernel_options(pairs + list(extra), f"kernel {label}")
    return Step(loaded.to_filter(normalize=normalize, scale=scale, name=label), ",".join([item, *extra]), loaded)


def _file_step(item, extra):
    from imgconv.kernelfile import read_kernel_file

    path, pairs = item[1:], []
    if not os.path.exists(path):
        match = _TRAILING_PARAMS.search(path)
        if match:
            pairs = [p for p in match.group(1)[1:].split(":")]
            path = path[: match.start()]
    if not path:
        raise CatalogError(f"step {item!r}: '@' must be followed by a kernel file name")
    if not os.path.exists(path):
        raise CatalogError(f"kernel file '{path}' not found")
    loaded = read_kernel_file(path)
    normalize, scale = _kernel_options(pairs + list(extra), f"kernel file '{path}'")
    name = os.path.basename(path)
    return Step(loaded.to_filter(normalize=normalize, scale=scale, name=name), ",".join([item, *extra]), loaded)


def _catalog_step(item, extra, catalog):
    name, pairs = _split_params(item, extra)
    if not name:
        raise CatalogError(f"step {item!r}: a filter name must come before ':'")
    flt = catalog.resolve(name, parse_assignments(pairs))
    return Step(flt, ",".join([item, *extra]))


def parse_chain(texts, catalog, *, kernels=(), params=()) -> Chain:
    """A :class:`Chain` from chain text(s) and ``--kernel`` specs.

    Parameters
    ----------
    texts : str or list of str
        Chains, applied one after another (``["blur", "sharpen"]`` is
        ``"blur,sharpen"``).
    catalog : imgconv.catalog.Catalog
        Where names are looked up.
    kernels : list of str
        ``--kernel`` values (inline matrix text or a kernel file), appended
        as steps after ``texts``.
    params : list of str
        ``-p KEY=VALUE`` pairs: allowed only for a chain of one catalog filter.

    Raises
    ------
    CatalogError
        A syntax error, an unknown name or parameter, bad inline numbers, a
        missing kernel file (usage mistakes).
    KernelFileError
        A kernel file that cannot be read or parsed.
    """
    from imgconv.kernelfile import load_kernel

    if isinstance(texts, str):
        texts = [texts]
    groups = _group(texts) if texts else []
    steps = []
    numbered = len(groups) + len(kernels) > 1
    for number, (item, *extra) in enumerate(groups, 1):
        try:
            if item.startswith("@"):
                step = _file_step(item, extra)
            elif item.startswith("["):
                step = _matrix_step(item, extra)
            else:
                step = _catalog_step(item, extra, catalog)
        except CatalogError as exc:
            if numbered:
                raise CatalogError(f"step {number} of the chain: {exc}") from None
            raise
        steps.append(step)
    for spec in kernels:
        loaded = load_kernel(spec)
        label = os.path.basename(loaded.source) if loaded.source != "inline" else "[" + " ".join(str(spec).split()) + "]"
        steps.append(Step(loaded.to_filter(name=label), label, loaded))
    if not steps:
        raise CatalogError("no filter given: name one (or a chain), or give --kernel")
    if params:
        if len(steps) != 1 or steps[0].loaded is not None:
            raise CatalogError("-p applies to a single catalog filter; in a chain write NAME:KEY=VALUE, e.g. gaussian:sigma=2,sharpen")
        (item, *extra) = groups[0]
        name, pairs = _split_params(item, extra)
        given = parse_assignments(pairs)
        more = parse_assignments(params)
        for key in more:
            if key in given:
                raise CatalogError(f"parameter '{key}' given twice: in '{item}' and as -p {key}={more[key]}")
        flt = catalog.resolve(name, {**given, **more})
        steps = [Step(flt, steps[0].text)]
    return Chain(tuple(steps))


# ---------------------------------------------------------------------------
# applying


def _to_dtype(values, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def apply_chain(image, chain, *, mode="reflect", cval=0.0, alpha="premultiplied", has_alpha=None, out_range=None, **options):
    """Apply a :class:`Chain` (or one :class:`~imgconv.catalog.Filter`) to an image.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        As for :func:`imgconv.apply_filter`; the result has its dtype.
    chain : Chain or Filter
    mode, cval, alpha, has_alpha
        As for :func:`imgconv.apply_filter` (``cval`` in the image's units;
        with ``chain.linear`` it is decoded like the pixels).
    out_range : {"clip", "abs", "offset", "normalize"}, optional
        Replaces the out-range of the chain's last step.
    **options
        Passed to every :func:`imgconv.apply_filter` call (``backend``,
        ``strategy``, ``threads``, ...).
    """
    from imgconv.filtering import apply_filter, full_scale

    if isinstance(chain, Filter):
        chain = Chain.of(chain)
    if not isinstance(chain, Chain):
        raise ValueError(f"chain must be a Chain or a Filter, got {type(chain).__name__}")
    if chain.is_plain:
        return apply_filter(image, chain.steps[0].filter, mode=mode, cval=cval, alpha=alpha, has_alpha=has_alpha, out_range=out_range, **options)

    array = np.asarray(image)
    if array.dtype.kind not in "iuf" or array.ndim not in (2, 3):
        # apply_filter words the refusal.
        return apply_filter(array, chain.steps[0].filter, has_alpha=has_alpha)
    channels = 1 if array.ndim == 2 else array.shape[2]
    if has_alpha is None:
        has_alpha = channels in (2, 4)
    if has_alpha and channels < 2:
        raise ValueError(f"has_alpha needs at least 2 channels, the image has {channels}")
    if isinstance(cval, bool) or not isinstance(cval, (int, float, np.number)) or not np.isfinite(cval):
        raise ValueError(f"cval must be a finite number, got {cval!r}")

    scale = full_scale(array.dtype)
    work = array.astype(np.float32)  # always a copy
    if scale != 1.0:
        work *= np.float32(1.0 / scale)
    cval = float(cval) / scale
    colour = (Ellipsis, slice(0, channels - 1)) if has_alpha else Ellipsis
    if chain.linear:
        from imgconv.colour import srgb_to_linear

        work[colour] = srgb_to_linear(work[colour])
        cval = float(srgb_to_linear(cval))
    original = work if chain.strength != 1.0 else None

    last = len(chain.steps) - 1
    for _ in range(chain.repeat):
        for index, step in enumerate(chain.steps):
            work = apply_filter(
                work,
                step.filter,
                mode=mode,
                cval=cval,
                alpha=alpha,
                has_alpha=has_alpha,
                out_range=out_range if index == last else None,
                **options,
            )

    if original is not None:
        work = original + np.float32(chain.strength) * (work - original)
        if has_alpha:
            np.clip(work[..., -1], 0.0, 1.0, out=work[..., -1])
    if chain.linear:
        from imgconv.colour import linear_to_srgb

        work[colour] = linear_to_srgb(work[colour])
    if scale != 1.0:
        work *= np.float32(scale)
    return _to_dtype(work, array.dtype)


def _job_options(job):
    """The options of a batch Job that apply_filter takes (backend, strategy,
    threads, ... whatever the Job carries), except those handled here."""
    from imgconv.filtering import apply_filter

    accepted = inspect.signature(apply_filter).parameters
    skip = {"image", "flt", "catalog", "has_alpha", "params", "filter"}
    return {
        f.name: getattr(job, f.name)
        for f in dataclasses.fields(job)
        if f.name in accepted and f.name not in skip
    }


def filter_image(job, image, source=None):
    """Filter an :class:`imgconv.io.ImageData` as ``job`` says; the pixels, in
    the image's dtype.  ``job.filter`` is a Filter or a Chain.

    With a chain in linear light, an image whose ICC profile has a tone curve
    other than sRGB's is refused (ImageError): it would be misread.
    """
    chain = job.filter
    name = source if source is not None else "the image"
    if isinstance(chain, Chain) and chain.linear and image.icc_profile:
        from imgconv.colour import check_srgb_profile

        problem = check_srgb_profile(image.icc_profile)
        if problem:
            raise ImageError(
                f"cannot filter '{name}' in linear light: {problem}; convert it to sRGB first, or leave out --linear"
            )
    try:
        return apply_chain(image.pixels, chain, has_alpha=image.has_alpha, **_job_options(job))
    except MemoryError:
        height, width = image.pixels.shape[:2]
        raise ImgconvError(f"not enough memory to filter '{name}' ({width}x{height})") from None
