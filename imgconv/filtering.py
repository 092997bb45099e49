"""The library API's filtering: ``convolve`` an array with a kernel,
``apply_filter`` a catalog filter (alpha policies, combining several kernels,
out-ranges).  Inputs are validated here, once, by one validator per kind of
argument; ``engine`` plans and runs each pass and finishes pixels by its one
policy.  The compiled backends are imported only when there is work for them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
from dataclasses import dataclass

import numpy as np

from imgconv import choices
from imgconv.choices import NATIVE_DTYPES
from imgconv.errors import shorten
from imgconv.engine.finish import Finish, clip_to_range, float32_range, shift, to_dtype
from imgconv.engine.plan import Plan, check_request, make_plan
from imgconv.engine.run import convolve_planned, numba_thread_setting, repeat_of
from imgconv.engine.run import takes_pillow_rows as _route_takes_pillow_rows

ALPHA_POLICIES = choices.ALPHA_POLICIES
OUT_RANGES = choices.OUT_RANGES


# --- one validator per kind of argument ---------------------------------------------------------


def check_image(image, name: str = "image") -> np.ndarray:
    """``image`` as an array of real numbers, 2-D (H, W) or 3-D (H, W, C) (ValueError otherwise)."""
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (H, W) or 3-D (H, W, C), got shape {array.shape}")
    return array


def check_kernel(kernel, name: str = "kernel") -> np.ndarray:
    """``kernel`` as a finite, non-empty 2-D float64 array (ValueError otherwise).

    Every kernel reaches the engine through here, whatever path it came by, so
    nothing the compiled code cannot handle gets that far.
    """
    array = np.asarray(kernel)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def check_cval(cval) -> float:
    """``cval`` as a finite float (ValueError otherwise)."""
    if type(cval) is float and math.isfinite(cval):  # the usual case, without the slower ABC check
        return cval
    if isinstance(cval, bool) or not isinstance(cval, numbers.Real) or not np.isfinite(cval):
        raise ValueError(f"cval must be a finite number, got {cval!r}")
    return float(cval)


def check_choice(value, allowed, name: str):
    """``value`` when it is one of ``allowed`` (ValueError naming ``name`` otherwise)."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def check_has_alpha(has_alpha, channels: int) -> bool:
    """Whether the last channel is alpha: ``has_alpha``, or the default for ``channels``."""
    if has_alpha is None:
        return choices.default_has_alpha(channels)
    if has_alpha and channels < 2:
        raise ValueError(f"has_alpha needs at least 2 channels, the image has {channels}")
    return bool(has_alpha)


def _channels(array) -> int:
    return 1 if array.ndim == 2 else array.shape[2]


@dataclass(frozen=True)
class Pass:
    """One convolution that ran: which filter and kernel, over which channels, by which plan."""

    filter: str
    kernel: int  # 1-based, of ``kernels``
    kernels: int
    channels: str  # "all", "colour", "alpha" or "colour, straight"
    plan: Plan
    note: str = ""  # how the rows went: streamed band by band, or why as a whole image

    def describe(self) -> str:
        """``sobel: kernel 2 of 2, 3x3 on 512x512x3 (colour): direct on cpu: ...``."""
        which = f" {self.kernel} of {self.kernels}," if self.kernels > 1 else ""
        kh, kw = self.plan.kernel_shape
        shape = "x".join(str(n) for n in self.plan.image_shape)
        part = "" if self.channels == "all" else f" ({self.channels})"
        note = f"; {self.note}" if self.note else ""
        return f"{shorten(self.filter)}: kernel{which} {kh}x{kw} on {shape}{part}: {self.plan.explain()}{note}"


def convolve(
    image,
    kernel,
    *,
    mode: str = "reflect",
    cval: float = 0.0,
    backend: str = "auto",
    strategy: str = "auto",
    threads: int | None = None,
    output=None,
    explain: bool = False,
) -> np.ndarray | tuple[np.ndarray, Plan]:
    """Convolve an image with a 2-D kernel, exactly as ``scipy.ndimage.convolve``.

    ``out[i, j] = sum_{u, v} kernel[u, v] * image[i - u + kh // 2, j - v + kw // 2]``
    (the kernel is flipped: true convolution), with positions outside the
    image read according to ``mode``, periodically however far the kernel
    reaches.  (scipy's 2-D ``reflect`` reads outside its line buffer once a
    kernel reaches past about four image sizes; there imgconv gives what
    ``scipy.ndimage.convolve1d`` and ``numpy.pad(..., "symmetric")`` give.)

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Any real dtype and any strides; channels are filtered independently.
        Never modified.
    kernel : array_like, 2-D
        Finite weights of any size, also larger than the image.
    mode : {"reflect", "mirror", "nearest", "wrap", "constant"}
        Border handling, scipy's names; OpenCV/numpy aliases (``reflect101``,
        ``replicate``, ``symmetric``, ...) are accepted.
    cval : float
        The value outside the image in ``constant`` mode.
    backend : {"auto", "cpu", "cuda"}
    strategy : {"auto", "direct", "separable", "fft"}
        "auto" lets the planner choose; the others force a strategy.
    threads : int, optional
        Threads to compute with; by default numba's setting (all cores, or
        ``NUMBA_NUM_THREADS``).
    output : ndarray or dtype, optional
        Where the result goes, as scipy's ``output``: a writable floating-point
        array of the image's shape, filled and returned (a C-contiguous float32
        one is written by the kernels themselves, with no new array: the way to
        filter frame after frame into one buffer; it may be the image itself),
        or a floating-point dtype for the returned array.  By default a new
        float32 array.
    explain : bool
        Also return the :class:`imgconv.engine.plan.Plan` that ran.

    Returns
    -------
    ndarray, the shape of ``image``: float32, or ``output`` (and the plan when ``explain``).

    Notes
    -----
    A call that repeats an earlier one's kernel and settings over an image of the same
    shape and dtype (C-contiguous, uint8, uint16 or float32, the kernel a numpy array of
    at most 4 KB) goes straight to the kernel prepared for it, without planning again:
    filtering frame after frame costs the kernel's time and little more.  A result of
    32 MiB or more is made over the memory of a large result the caller has dropped (never
    one still held, whole or through a view), so it pays no fresh page faults;
    ``imgconv.tunables.RESULT_RECYCLE_BYTES`` bounds the memory kept (0: none).

    Examples
    --------
    >>> import numpy as np, imgconv
    >>> image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    >>> imgconv.convolve(image, [[0, 1, 0], [1, -4, 1], [0, 1, 0]], mode="nearest")
    array([[ 5.,  4.,  4.,  3.],
           [ 1.,  0.,  0., -1.],
           [-3., -4., -4., -5.]], dtype=float32)
    >>> frame = np.empty((3, 4), np.float32)
    >>> imgconv.convolve(image, np.ones((1, 2)), output=frame) is frame
    True
    """
    key = _repeat_key(image, kernel, mode, cval, backend, strategy, threads, output)
    repeat = None if key is None else _REPEATS.get(key)
    if repeat is not None:
        result = _run_repeat(repeat, image, output, key[-1])
        if result is not None:
            return (result, repeat.plan) if explain else result
    array = check_image(image)
    weights = check_kernel(kernel)
    mode = choices.canonical_mode(mode)
    cval = check_cval(cval)
    check_request(backend, strategy)
    target, dtype = _check_output(output, array)
    # The kernels write an aligned, C-contiguous float32 target themselves (in native byte
    # order: numba's one array type), unless it overlaps the image (they read the image while
    # they write): then the result is made apart and copied in.
    direct = (
        target is not None
        and target.dtype == np.float32
        and target.dtype.isnative
        and target.flags.c_contiguous
        and target.flags.aligned
        and not np.may_share_memory(target, array)
    )
    result, plan = convolve_planned(
        array, weights, mode=mode, cval=cval, backend=backend, strategy=strategy, threads=threads, out=target if direct else None
    )
    if target is not None:
        if not direct:
            np.copyto(target, result, casting="same_kind")
        result = target  # (the kernels' result is a view of it)
    elif dtype is not None:
        result = result.astype(dtype, copy=False)
    if key is not None and dtype is None and (target is None or direct):
        _keep_repeat(key, plan, array, mode, cval, threads)
    return (result, plan) if explain else result


# Calls repeated with the same kernel, settings and kind of image (a filter applied frame
# after frame, a loop over tiles) skip the validation, planning and routing they repeat:
# with caches left cold by other work, a 64 x 64 3x3 took 0.50 ms a call through them and
# takes 0.26 ms past them, 77 us of it the compiled kernel's own call (docs/performance.md,
# "Repeated calls").  Keyed by everything those steps read; made only after a call has passed them.
# A plain dict, emptied when full: threads share it without a lock.
_REPEATS = {}
_REPEATS_SIZE = 64
_REPEAT_KERNEL_BYTES = 4096  # larger kernels cost more than the steps skipped
_NATIVE = frozenset(NATIVE_DTYPES)  # (a set: half the tuple's cost to search)


def _repeat_key(image, kernel, mode, cval, backend, strategy, threads, output):
    """The :data:`_REPEATS` key of a call, or None where the call cannot repeat one: only
    plain arrays, an image the kernels read as it is (C-contiguous, aligned, writable, of
    a native dtype), a small kernel, and no output or a float32 one.  Its last element is
    numba's thread setting in this thread (read once the compiled kernels have run)."""
    if type(image) is not np.ndarray or type(kernel) is not np.ndarray or kernel.nbytes > _REPEAT_KERNEL_BYTES:
        return None
    if "imgconv.engine.cpu" not in sys.modules or not image.size:
        return None  # (no compiled pass has run; and numba's threads start with it, on its layer)
    if not image.flags.carray or image.dtype not in _NATIVE:  # (carray: C-contiguous, aligned, writable)
        return None
    if (type(cval) is not float and type(cval) is not int) or (cval == 0 and math.copysign(1.0, cval) < 0):
        return None  # (-0.0 equals 0.0 as a key; it takes the full path)
    if output is not None and (type(output) is not np.ndarray or output.dtype != np.float32):
        return None
    if type(threads) is not int and threads is not None:
        return None
    current = numba_thread_setting()
    return (image.shape, image.dtype, kernel.shape, kernel.dtype, kernel.tobytes(), mode, cval, backend, strategy, threads, output is None, current)


def _run_repeat(repeat, image, output, current):
    """The result of a kept :class:`imgconv.engine.run.Repeat` for this call, or None where
    ``output`` is not an array the kernels may write (the full path then copies into it), or
    the repeat no longer holds."""
    if output is not None:
        flags = output.flags
        if (
            output.shape != image.shape
            or not (flags.c_contiguous and flags.aligned and flags.writeable)
            or not output.dtype.isnative
            or np.may_share_memory(output, image)
        ):
            return None
    rows = image if image.ndim == 2 else image.reshape(image.shape[0], -1)
    out = None if output is None else output.reshape(rows.shape)
    result = repeat(rows, out, current)
    if result is None:  # (imgconv.tunables changed since it was kept)
        return None
    return output if output is not None else result.reshape(image.shape)


def _keep_repeat(key, plan, array, mode, cval, threads):
    """Keep the :class:`imgconv.engine.run.Repeat` of a call that has just run, where it ran
    one compiled CPU pass over the image as it is."""
    rows = array if array.ndim == 2 else array.reshape(array.shape[0], -1)
    repeat = repeat_of(plan, rows, _channels(array), mode=mode, cval=cval, threads=threads)
    if repeat is None:
        return
    if len(_REPEATS) >= _REPEATS_SIZE:
        _REPEATS.clear()
    _REPEATS[key] = repeat


def _check_output(output, array):
    """``(target array, None)`` for an ``output`` array, ``(None, dtype)`` for a dtype, ``(None,
    None)`` for none (ValueError for anything else: the result is floating point)."""
    if output is None:
        return None, None
    if isinstance(output, np.ndarray):
        if output.shape != array.shape:
            raise ValueError(f"output must have the image's shape {array.shape}, got {output.shape}")
        if output.dtype.kind != "f":
            raise ValueError(f"output must be a floating-point array (the result is float32), got dtype {output.dtype}")
        if not output.flags.writeable:
            raise ValueError("output is read-only")
        return output, None
    try:
        dtype = np.dtype(output)
    except TypeError:
        raise ValueError(f"output must be an array or a dtype, got {output!r}") from None
    if dtype.kind != "f":
        raise ValueError(f"output must be a floating-point dtype (the result is float32), got {dtype}")
    return None, dtype


def full_scale(dtype) -> float:
    """The value that means "full intensity" for a dtype: 255 for uint8,
    65535 for uint16, 1.0 for floating point."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return float(np.iinfo(dtype).max)
    return 1.0


def pixel_mapping(bias: float, out_range: str, scale: float) -> tuple[float, bool]:
    """The filter's bias and a per-pixel ``out_range`` (not "normalize") as
    ``(offset, absolute)``: ``|v + offset|`` or ``v + offset``."""
    return bias * scale + (scale / 2 if out_range == "offset" else 0.0), out_range == "abs"


def _map_range(values, bias, out_range, scale, dtype):
    """Add the bias and map signed filter results (float32, changed in place)
    to pixel values (``out_range``)."""
    if out_range != "normalize":
        shift(values, *pixel_mapping(bias, out_range, scale))
    elif values.size:
        values += np.float32(bias * scale)
        low, high = float(values.min()), float(values.max())
        if high > low:
            values -= np.float32(low)
            values *= np.float32(scale / (high - low))
        else:
            values.fill(0.0)
    return clip_to_range(values, dtype)


def float_copies(flt, *, has_alpha: bool, dtype, out_range: str | None = None, alpha: str = "premultiplied") -> float:
    """How many full-size float32 copies of the image (all its channels) :func:`apply_filter`
    holds at its peak, beyond the input and the output: what the memory guard
    (:func:`imgconv.memory.memory_needed`) adds for the filter.

    Counted from the code below, route by route (rows stream through rings of a
    few rows, which are not counted), and checked against the peak memory of
    ``imgconv apply`` on a 3000x3000 RGB and RGBA PNG (within 15 %; the
    guard's margin covers the rest; docs/performance.md, "Memory"):

    - the fused path (no alpha, one kernel, a per-pixel out-range, a native
      dtype): 0, the kernels write the output pixels directly; but a kernel the
      planner may split into 2 or 3 separable pairs sums them in 2 float32
      images (``engine/cpu.py`` ``run_separable``): 2.
    - every other filter of a native dtype (alpha, several kernels combined,
      normalize) runs band by band (``engine/stream.py``): 0 (the band buffers,
      a few MiB, are not counted; as for the fused path, an FFT or GPU plan's
      whole-image float32 result is not counted either).
    - otherwise (other dtypes) every kernel's float32 result is kept until they are combined
      (``_filter_array``), and a combination adds its total and one temporary
      (``r * r``): 1 for one kernel, 4 for sobel's two (measured 3.8).
    - with alpha the kernels run on the colour (3 of 4 channels: 0.75 each);
      premultiplied, the opacity, the premultiplied colour, and where the result
      has transparent pixels the straight colour and its merge add 1.5
      (gaussian on RGBA measured 2.6 in all, sobel 4.0); ``separate`` and
      ``ignore`` add the concatenation of colour and alpha: 1.
    """
    from imgconv.engine.plan import direct_cost, low_rank_factors, separable_cost

    out_range = flt.out_range if out_range is None else out_range
    single = flt.combine == "single"
    fused = not has_alpha and single and out_range != "normalize"
    if not fused and np.dtype(dtype) in choices.NATIVE_DTYPES:
        return 0  # streamed band by band (engine/stream.py): band buffers, not counted
    if fused and np.dtype(dtype) in choices.NATIVE_DTYPES:
        kernel = flt.kernels[0]
        if kernel.factors is None and min(kernel.shape) > 1 and separable_cost(kernel.shape, 2) < direct_cost(kernel.matrix):
            factors = low_rank_factors(kernel.matrix)  # memoised; the planner asks the same
            if factors is not None and len(factors) > 1:
                return 2  # the planner may well take 2 or 3 separable pairs
        return 0
    results = len(flt.kernels) + (0 if single else 2)
    if not has_alpha:
        return results
    if alpha == "separate":
        return results + 1
    return 0.75 * results + (1.5 if alpha == "premultiplied" else 1)


def preserves_flat_areas(flt) -> bool:
    """One kernel summing to 1: flat areas stay as they are (so alpha may be filtered too)."""
    return flt.combine == "single" and abs(float(flt.kernels[0].matrix.sum()) - 1.0) <= choices.UNIT_SUM_TOLERANCE


@dataclass(frozen=True)
class _Options:
    """How each pass runs (validated); ``passes`` collects what ran when explaining."""

    mode: str
    cval: float
    backend: str
    strategy: str
    threads: int | None
    passes: list | None = None

    def convolve(self, image, kernel, index, flt, channels, *, cval=None, finish=Finish()):
        result, plan = convolve_planned(
            image,
            kernel.matrix,
            mode=self.mode,
            cval=self.cval if cval is None else cval,
            backend=self.backend,
            strategy=self.strategy,
            factors=kernel.factors,
            threads=self.threads,
            finish=finish,
        )
        if self.passes is not None:
            self.passes.append(Pass(flt.name, index, len(flt.kernels), channels, plan))
        return result


def _filter_array(flt, image, options, channels, cval=None):
    """Run every kernel of ``flt`` over ``image`` and combine the results (float32)."""
    results = [options.convolve(image, kernel, i, flt, channels, cval=cval) for i, kernel in enumerate(flt.kernels, 1)]
    return _combine(flt, results)


def _combine(flt, results):
    """``flt``'s kernels' float32 results combined (the first is changed in place), element by
    element: the same operations on a whole image and on a band of its rows."""
    if flt.combine == "single":
        return results[0]
    if flt.combine == "magnitude":
        total = results[0] * results[0]
        for r in results[1:]:
            total += r * r
        return np.sqrt(total, out=total)
    if flt.combine == "sum-abs":
        total = np.abs(results[0])
        for r in results[1:]:
            total += np.abs(r)
        return total
    if flt.combine == "max":
        total = results[0]
        for r in results[1:]:
            np.maximum(total, r, out=total)
        return total
    raise ValueError(f"filter {flt.name!r}: unknown combine {flt.combine!r}")


def _stream(array, flt, options, alpha, has_alpha, scale, out_range):
    """:func:`_apply` where the fused kernels do not do (alpha, several kernels combined,
    ``normalize``), band by band (``engine/stream.py``); None where a plan is not one the
    band driver runs (the GPU, the FFT): then the whole image, as before."""
    from imgconv.engine.run import canonical_rows, thread_count
    from imgconv.engine.stream import run_layers, streams

    rows, channels = canonical_rows(array)
    height, width = array.shape[:2]
    threads = thread_count(options.threads)
    shape = (height, width, channels)
    if has_alpha:
        layer = AlphaLayer(flt, shape, options, alpha, scale, out_range, array.dtype, threads, flt.name)
    else:
        layer = FilterLayer(flt, shape, options, scale, out_range, array.dtype, threads, flt.name)
    if not all(streams(plan) for plan in layer.plans):
        return None
    out = np.empty(rows.shape, array.dtype)
    run_layers([layer], rows, out, threads=options.threads)
    if options.passes is not None:
        options.passes.extend(layer.passes)
    return out.reshape(array.shape)


def resolve_filter(flt, catalog=None, params=None):
    """A :class:`~imgconv.kernels.Filter` from a catalog name (with ``params``) or a resolved filter."""
    params = params or {}
    if isinstance(flt, str):
        if catalog is None:
            from imgconv.kernels import load_catalog

            catalog = load_catalog()
        flt = catalog.resolve(flt, params)
    elif params:
        raise ValueError(f"parameters {sorted(params)} given with an already resolved filter")
    # The engine's door: whatever path a kernel came by, nothing compiled code cannot handle passes.
    if not getattr(flt, "kernels", None):
        raise ValueError(f"filter {getattr(flt, 'name', flt)!r} has no kernels")
    for kernel in flt.kernels:
        check_kernel(kernel.matrix, f"filter {flt.name!r}: kernel")
    return flt


def apply_filter(
    image,
    flt,
    *,
    mode: str = "reflect",
    cval: float = 0.0,
    backend: str = "auto",
    strategy: str = "auto",
    threads: int | None = None,
    alpha: str = "premultiplied",
    has_alpha: bool | None = None,
    out_range: str | None = None,
    catalog=None,
    explain: bool = False,
    **params,
):
    """Apply a catalog filter to an image and return it in the image's dtype.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Integer images are filtered in their own units (0..255, 0..65535) and
        rounded and clipped back only at the end; float images stay float.
    flt : str or imgconv.catalog.Filter
        A catalog name (resolved with ``params``) or a resolved filter.
    mode, cval, backend, strategy, threads
        As for :func:`convolve`.  ``cval`` is in the image's units.
    alpha : {"premultiplied", "separate", "ignore"}
        How the alpha channel is treated.  "premultiplied": colour is
        multiplied by alpha before filtering and divided by the filtered alpha
        after (no dark fringes at transparent edges; where the result is
        fully transparent, its colour is filtered straight); alpha itself is filtered
        when the filter preserves flat areas (a single kernel summing to 1),
        and kept otherwise, so an edge detector does not erase it.
        "separate": every channel, alpha too, is filtered on its own.
        "ignore": colour is filtered as stored and alpha is copied unchanged.
    has_alpha : bool, optional
        Whether the last channel is alpha; by default, for 2 and 4 channels.
    out_range : {"clip", "abs", "offset", "normalize"}, optional
        How signed results become pixels (default: the filter's own):
        clip to the dtype's range, take the absolute value, add half of full
        scale (zero becomes mid-grey), or stretch min..max to the full range.
        Floating-point images are not clipped.
    catalog : imgconv.catalog.Catalog, optional
        Where to look ``flt`` up; the built-in catalog (plus ``IMGCONV_CATALOG``) by default.
    explain : bool
        Also return the :class:`Pass` list: every convolution that ran, with
        the shape it ran on and its plan.
    **params
        The filter's parameters, e.g. ``sigma=2.0``.

    Returns
    -------
    ndarray, the image's shape and dtype (and the passes when ``explain``).

    Examples
    --------
    >>> import numpy as np, imgconv
    >>> image = np.full((4, 4), 200, np.uint8)
    >>> imgconv.apply_filter(image, "sharpen")[0]
    array([200, 200, 200, 200], dtype=uint8)
    >>> imgconv.apply_filter(np.full((2, 2), 2**31 - 1, np.int32), "sharpen")[0]
    array([2147483520, 2147483520], dtype=int32)
    """
    array = check_image(image)
    if array.dtype.kind == "b":
        raise ValueError("boolean images are not supported: convert to uint8 or float first")
    flt = resolve_filter(flt, catalog, params)
    check_choice(alpha, ALPHA_POLICIES, "alpha")
    out_range = check_choice(flt.out_range if out_range is None else out_range, OUT_RANGES, "out_range")
    has_alpha = check_has_alpha(has_alpha, _channels(array))
    check_request(backend, strategy)
    options = _Options(choices.canonical_mode(mode), check_cval(cval), backend, strategy, threads, [] if explain else None)
    result = _apply(array, flt, options, alpha, has_alpha, out_range)
    return (result, options.passes) if explain else result


def takes_pillow_rows(flt, shape, *, out_range=None, backend="auto", strategy="auto") -> bool:
    """Whether :func:`apply_filter` of the resolved ``flt`` on a uint8 RGB image of ``shape``
    (no alpha) would hand Pillow's 4-byte rows to the compiled kernels as they are
    (``engine.run.takes_pillow_rows``): one kernel, finished in the kernel."""
    out_range = flt.out_range if out_range is None else out_range
    if flt.combine != "single" or out_range == "normalize":
        return False
    kernel = flt.kernels[0]
    plan = make_plan(kernel.matrix, tuple(shape), backend=backend, strategy=strategy, factors=kernel.factors)
    return _route_takes_pillow_rows(plan, shape)


def streamable(dtype) -> str | None:
    """None when an image of ``dtype`` can run row by row (``engine/stream.py``), else why
    not (for ``--explain``)."""
    if np.dtype(dtype) not in choices.NATIVE_DTYPES:
        return f"whole image: a {np.dtype(dtype)} image is filtered as a float32 copy"
    return None


def store_spec(dtype) -> np.ndarray:
    """How the band driver's per-row transforms store into ``dtype`` (``engine/points.py``):
    ``low, high, rounding`` as float32; rounded and clipped for an integer dtype."""
    if np.dtype(dtype).kind in "iu":
        return np.array([*float32_range(dtype), 1], np.float32)
    return np.array([-np.inf, np.inf, 0], np.float32)


STREAMED = "rows streamed band by band"
MEASURED = "rows streamed twice (normalize: the first pass finds the minimum and maximum)"


class _Group:
    """Every kernel of a filter over one channel group of band rows, combined as
    :func:`_filter_array` combines them (float32)."""

    def __init__(self, flt, shape, options, cval, threads, label, channels_label):
        from imgconv.engine.stream import Kernel

        height, width, channels = shape
        self.flt, self.elements = flt, width * channels
        self.kernels, self.passes = [], []
        for index, kernel in enumerate(flt.kernels, 1):
            plan = make_plan(kernel.matrix, shape, backend=options.backend, strategy=options.strategy, factors=kernel.factors)
            self.kernels.append(Kernel(plan, height, width, channels, options.mode, cval, threads))
            self.passes.append(Pass(label, index, len(flt.kernels), channels_label, plan))

    @property
    def plans(self):
        return [kernel.plan for kernel in self.kernels]

    def needs(self, r0, r1):
        parts = [kernel.needs(r0, r1) for kernel in self.kernels]
        return parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))

    def run(self, prev, index, r0, r1):
        from imgconv.engine.finish import FLOAT32

        results = []
        for kernel in self.kernels:
            result = np.empty((r1 - r0, self.elements), np.float32)
            kernel.run(prev, index, r0, r1, result, FLOAT32)
            results.append(result)
        return _combine(self.flt, results)


class _Mapping:
    """The filter's bias and out-range on band rows (:func:`_map_range`).  ``normalize``
    needs the whole image's minimum and maximum: the band driver runs the rows twice, the
    first time (``measuring``) only to find them (``engine/stream.py``)."""

    def __init__(self, bias, out_range, scale, dtype):
        self.bias, self.out_range, self.scale, self.dtype = bias, out_range, scale, np.dtype(dtype)
        self.measures = out_range == "normalize"
        self.measuring = self.measures
        self.lows, self.highs = [], []
        self.extent = None

    def done_measuring(self):
        self.measuring = False
        if self.lows:  # min / max of the band extremes (NaN, if any, as values.min() gives it)
            self.extent = (float(np.min(self.lows)), float(np.max(self.highs)))

    def apply(self, values):
        """``values`` (float32, changed in place) mapped and clipped; None while measuring."""
        if not self.measures:
            shift(values, *pixel_mapping(self.bias, self.out_range, self.scale))
            return clip_to_range(values, self.dtype)
        values += np.float32(self.bias * self.scale)
        if self.measuring:
            if values.size:
                self.lows.append(values.min())
                self.highs.append(values.max())
            return None
        low, high = self.extent
        if high > low:
            values -= np.float32(low)
            values *= np.float32(self.scale / (high - low))
        else:
            values.fill(0.0)
        return clip_to_range(values, self.dtype)


class FilterLayer:
    """A filter over every channel of band rows, where the fused finish does not do:
    several kernels combined, or out-range ``normalize`` (``engine/stream.py``)."""

    def __init__(self, flt, shape, options, scale, out_range, dtype, threads, label):
        self.group = _Group(flt, shape, options, options.cval, threads, label, "all")
        self.mapping = _Mapping(flt.bias, out_range, scale, dtype)
        self.plans = self.group.plans
        self.band_buffers = len(flt.kernels) + 1  # each kernel's result, and a combine's (engine.stream.band_rows)
        note = MEASURED if self.mapping.measures else STREAMED
        self.passes = tuple(dataclasses.replace(p, note=note) for p in self.group.passes)

    def needs(self, r0, r1):
        return self.group.needs(r0, r1)

    def compute(self, prev, index, r0, r1, out):
        mapped = self.mapping.apply(self.group.run(prev, index, r0, r1))
        if mapped is not None:
            out[...] = to_dtype(mapped, self.mapping.dtype)


def _store(values, target):
    """float32 ``values`` (changed in place) into ``target`` as :func:`to_dtype` stores them."""
    if target.dtype.kind in "iu":
        np.rint(values, out=values)
        clip_to_range(values, target.dtype)
    target[...] = values


class AlphaLayer:
    """One filter over rows with an alpha channel, by an alpha policy, as a layer of the band
    driver (``engine/stream.py``): what :func:`_apply` does to the whole image, row by row.

    Rows hold interleaved colour and alpha in units of ``scale`` (full intensity); the
    output rows are ``dtype`` (float32 for a chain's later steps).  ``premultiplied``: the
    colour rows a band needs are multiplied by their opacity as they enter, the sums divided
    by the filtered opacity as they leave; ``separate``: every channel filtered at once,
    alpha clipped; ``ignore``: colour filtered, alpha copied.
    """

    def __init__(self, flt, shape, options, alpha, scale, out_range, dtype, threads, label):
        height, width, channels = shape
        self.flt, self.alpha, self.scale, self.dtype = flt, alpha, scale, np.dtype(dtype)
        self.height, self.width, self.channels = height, width, channels
        self.mapping = _Mapping(flt.bias, out_range, scale, dtype)
        self.fused = alpha == "separate" and self.dtype.kind in "iu" and not self.mapping.measures and flt.combine == "single"
        self.fused = self.fused and pixel_mapping(flt.bias, out_range, scale) == (0.0, False)
        self.opacity = None
        if alpha == "separate":
            self.all = _Group(flt, shape, options, options.cval, threads, label, "all")
            groups = [self.all]
        else:
            self.colour = _Group(flt, (height, width, channels - 1), options, options.cval, threads, label, "colour")
            groups = [self.colour]
            if alpha == "premultiplied" and preserves_flat_areas(flt):
                # Beyond the image the border colour is opaque (as in _apply).
                self.opacity = _Group(flt, (height, width, 1), options, 1.0, threads, label, "alpha")
                groups.append(self.opacity)
        self.plans = [plan for group in groups for plan in group.plans]
        self.compiled = any(kernel.compiled for group in groups for kernel in group.kernels)
        # Float32 rows a band makes here (engine.stream.band_rows): premultiplied, the colour and
        # opacity rows in, their sums, the straight colour's; else each kernel's result and the mapped.
        kernels = len(flt.kernels)
        self.band_buffers = 0 if self.fused else (3 + kernels if alpha == "premultiplied" else kernels + 1)
        self.store_spec = store_spec(self.dtype)  # how unpremultiply_rows stores
        note = MEASURED if self.mapping.measures else STREAMED
        self.passes = tuple(dataclasses.replace(p, note=note) for group in groups for p in group.passes)

    def needs(self, r0, r1):
        return (self.all if self.alpha == "separate" else self.colour).needs(r0, r1)

    def compute(self, prev, index, r0, r1, out):
        from imgconv.engine.stream import rows_of

        n, width, channels = r1 - r0, self.width, self.channels
        if self.alpha == "separate":
            if self.fused:  # clipping alpha to 0..scale is the integer finish's own clip
                self.all.kernels[0].run(prev, index, r0, r1, out, Finish(self.dtype))
                return
            result = self.all.run(prev, index, r0, r1).reshape(n, width, channels)
            if self.mapping.apply(result[..., :-1]) is None:
                return
            np.clip(result[..., -1:], 0.0, self.scale, out=result[..., -1:])
            out[...] = to_dtype(result.reshape(n, -1), self.dtype)
            return
        rows = self.colour.needs(r0, r1)
        block = (prev[rows] if index is None else prev[index[rows]]).reshape(len(rows), width, channels)
        local = np.full(self.height, -1, np.int64)  # image row -> row of block
        local[rows] = np.arange(len(rows))
        colour = block[..., :-1]
        if self.alpha == "premultiplied":
            from imgconv.engine.stream import points_module

            points = points_module(self.compiled)
            m = len(rows)
            opacity = np.empty((m, width), np.float32)
            premultiplied = np.empty((m, width * (channels - 1)), np.float32)
            points.premultiply_rows(block.reshape(m, -1), np.float32(1.0 / self.scale), channels, premultiplied, opacity)
            filtered = self.colour.run(premultiplied, local, r0, r1)
            if self.opacity is not None:
                new_opacity = self.opacity.run(opacity, local, r0, r1)
                np.clip(new_opacity, 0.0, 1.0, out=new_opacity)
            else:
                new_opacity = opacity[local[r0] : local[r0] + n]
            if (new_opacity > choices.TRANSPARENT_OPACITY).all():
                straight = np.empty((0, 0), np.float32)
            else:  # as _apply: the fully transparent result's colour filtered straight
                straight = self.colour.run(np.ascontiguousarray(colour.reshape(m, -1)), local, r0, r1)
            if not self.mapping.measures:  # divided, mapped and stored in one sweep
                offset, absolute = pixel_mapping(self.flt.bias, self.mapping.out_range, self.scale)
                points.unpremultiply_rows(
                    filtered, new_opacity, straight, np.float32(choices.TRANSPARENT_OPACITY), np.float32(offset), absolute,
                    np.float32(self.scale), self.store_spec, out,
                )
                return
            filtered = filtered.reshape(n, width, channels - 1)
            new_opacity = new_opacity.reshape(n, width, 1)
            visible = new_opacity > choices.TRANSPARENT_OPACITY
            if len(straight) == 0:
                filtered /= new_opacity
            else:
                np.divide(filtered, np.where(visible, new_opacity, np.float32(1.0)), out=filtered)
                np.copyto(filtered, straight.reshape(n, width, channels - 1), where=~visible)
            new_alpha = new_opacity * np.float32(self.scale)
        else:  # ignore
            filtered = self.colour.run(np.ascontiguousarray(colour.reshape(len(rows), -1)), local, r0, r1)
            filtered = filtered.reshape(n, width, channels - 1)
            new_alpha = rows_of(prev, index, r0, r1).reshape(n, width, channels)[..., -1:]
        mapped = self.mapping.apply(filtered)
        if mapped is None:
            return
        cells = out.reshape(n, width, channels)
        _store(mapped, cells[..., :-1])
        _store(new_alpha.astype(np.float32), cells[..., -1:])


def _apply(array, flt, options, alpha, has_alpha, out_range):
    """apply_filter on validated arguments."""
    scale = full_scale(array.dtype)
    if not has_alpha and flt.combine == "single" and out_range != "normalize" and array.dtype in choices.NATIVE_DTYPES:
        # One kernel and a per-pixel mapping: the kernels store final pixels directly.
        finish = Finish(array.dtype, *pixel_mapping(flt.bias, out_range, scale))
        return options.convolve(array, flt.kernels[0], 1, flt, "all", finish=finish)
    why = streamable(array.dtype)
    if why is None:
        streamed = _stream(array, flt, options, alpha, has_alpha, scale, out_range)
        if streamed is not None:
            return streamed
        why = "whole image: a plan runs where the band driver does not (FFT or GPU)"
    first = len(options.passes) if options.passes is not None else 0
    result = _whole_image(array, flt, options, alpha, has_alpha, out_range, scale)
    if options.passes is not None:  # --explain says why these ran on the whole image
        options.passes[first:] = [dataclasses.replace(p, note=why) for p in options.passes[first:]]
    return result


def _whole_image(array, flt, options, alpha, has_alpha, out_range, scale):
    """:func:`_apply` on the whole image: float32 results of every kernel, alpha and mapping."""
    colour = array[..., :-1] if has_alpha else array
    part = "colour" if has_alpha else "all"

    if has_alpha and alpha == "premultiplied":
        opacity = array[..., -1:].astype(np.float32) * np.float32(1.0 / scale)
        filtered = _filter_array(flt, colour * opacity, options, part)
        if preserves_flat_areas(flt):
            # Beyond the image the border colour is opaque, so an opaque RGBA
            # image filters exactly like the same RGB image.
            new_opacity = _filter_array(flt, opacity, options, "alpha", cval=1.0)
            np.clip(new_opacity, 0.0, 1.0, out=new_opacity)
        else:
            new_opacity = opacity
        visible = new_opacity > choices.TRANSPARENT_OPACITY
        if visible.all():
            filtered /= new_opacity
        else:
            # Where the result is fully transparent its colour is invisible but
            # kept meaningful (and an identity filter exact): filter it straight.
            straight = _filter_array(flt, colour, options, "colour, straight")
            filtered = np.where(visible, filtered / np.where(visible, new_opacity, np.float32(1.0)), straight)
        new_alpha = new_opacity * np.float32(scale)
    elif has_alpha and alpha == "separate":
        filtered = _filter_array(flt, colour, options, part)
        new_alpha = np.clip(_filter_array(flt, array[..., -1:], options, "alpha"), 0.0, scale)
    else:
        filtered = _filter_array(flt, colour, options, part)
        new_alpha = array[..., -1:] if has_alpha else None

    mapped = _map_range(filtered, flt.bias, out_range, scale, array.dtype)
    if has_alpha:
        mapped = np.concatenate([mapped, new_alpha.astype(np.float32)], axis=-1)
    return to_dtype(mapped, array.dtype)
