"""The library API: ``convolve`` an array with a kernel, ``apply_filter`` a
catalog filter.  Inputs are validated here, once; the compiled backends are
imported only when there is work for them."""

import numbers
from dataclasses import dataclass

import numpy as np

from imgconv.engine import borders
from imgconv.engine.plan import make_plan

ALPHA_POLICIES = ("premultiplied", "separate", "ignore")
OUT_RANGES = ("clip", "abs", "offset", "normalize")

# Image dtypes the kernels read and write directly.
_FUSED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

# A filter "preserves flat areas" (and so also filters alpha) when its kernel sums to 1.
_UNIT_SUM_TOLERANCE = 1e-6


def _as_image(image):
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"image must hold real numbers, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D (H, W) or 3-D (H, W, C), got shape {array.shape}")
    return array


def _as_kernel(kernel):
    array = np.asarray(kernel)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"kernel must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"kernel is empty (shape {array.shape})")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("kernel contains NaN or infinite values")
    return array


def _as_cval(cval):
    if isinstance(cval, bool) or not isinstance(cval, numbers.Real) or not np.isfinite(cval):
        raise ValueError(f"cval must be a finite number, got {cval!r}")
    return float(cval)


@dataclass(frozen=True)
class Finish:
    """What happens to each result before it is stored: ``offset`` added, the
    absolute value taken when ``absolute``, and for an integer ``dtype``
    rounding and clipping to its range.  The CPU kernels do it on the fly;
    other routes do it afterwards with the same arithmetic."""

    dtype: np.dtype = np.dtype(np.float32)
    offset: float = 0.0
    absolute: bool = False


FLOAT32 = Finish()


def _shift(values, offset, absolute):
    """``values + offset``, then its absolute value when ``absolute`` (float32, in place)."""
    if offset:
        values += np.float32(offset)
    if absolute:
        np.abs(values, out=values)
    return values


def _finish_array(values, finish):
    """Apply ``finish`` to a float32 array (changed in place) and return the stored result."""
    return _to_dtype(_shift(values, finish.offset, finish.absolute), finish.dtype)


def _run(plan, image, kernel, mode, cval, threads, finish=FLOAT32):
    if plan.backend == "cuda":  # numba.cuda is imported only here
        from imgconv.engine import cuda

        return _finish_array(cuda.convolve(image, kernel, plan, mode, cval), finish)
    # numba is imported only when there is work.
    from imgconv.engine import cpu

    fused = dict(out_dtype=finish.dtype, offset=finish.offset, absolute=finish.absolute)
    if plan.strategy == "fft":
        from imgconv.engine.fft import convolve_fft

        return _finish_array(convolve_fft(image, kernel, mode, cval, threads), finish)
    if plan.strategy == "separable":
        if len(plan.factors) == 1:
            (column, row), = plan.factors
            return cpu.filter_separable(image, column, row, mode, cval, **fused)
        result = None
        for column, row in plan.factors:
            part = cpu.filter_separable(image, column, row, mode, cval)
            result = part if result is None else np.add(result, part, out=result)
        return _finish_array(result, finish)
    return cpu.filter_direct(image, kernel, mode, cval, **fused)


def thread_count(threads):
    """How many threads to use: ``threads``, or numba's setting (NUMBA_NUM_THREADS)."""
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return numba.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not 1 <= threads <= limit:
        raise ValueError(f"threads must be a whole number from 1 to {limit} (NUMBA_NUM_THREADS), got {threads!r}")
    return int(threads)


def _convolve_array(image, kernel, mode, cval, backend, strategy, factors=None, threads=None, finish=FLOAT32):
    """Convolve every channel of a validated image; the result (float32, or as
    ``finish`` says) and the plan."""
    plan = make_plan(kernel, image.shape, backend=backend, strategy=strategy, factors=factors)
    count = thread_count(threads)
    if image.size == 0:
        return np.zeros(image.shape, finish.dtype), plan
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(count)  # numba's setting is per calling thread
    try:
        return _run(plan, image, kernel, mode, cval, count, finish), plan
    finally:
        numba.set_num_threads(previous)


def convolve(image, kernel, *, mode="reflect", cval=0.0, backend="auto", strategy="auto", threads=None, explain=False):
    """Convolve an image with a 2-D kernel, exactly as ``scipy.ndimage.convolve``.

    ``out[i, j] = sum_{u, v} kernel[u, v] * image[i - u + kh // 2, j - v + kw // 2]``
    (the kernel is flipped: true convolution), with positions outside the
    image read according to ``mode``.

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
    explain : bool
        Also return the :class:`imgconv.engine.plan.Plan` that ran.

    Returns
    -------
    ndarray of float32, the shape of ``image`` (and the plan when ``explain``).
    """
    array = _as_image(image)
    weights = _as_kernel(kernel)
    mode = borders.canonical_mode(mode)
    cval = _as_cval(cval)
    result, plan = _convolve_array(array, weights, mode, cval, backend, strategy, threads=threads)
    return (result, plan) if explain else result


def full_scale(dtype):
    """The value that means "full intensity" for a dtype: 255 for uint8,
    65535 for uint16, 1.0 for floating point."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return float(np.iinfo(dtype).max)
    return 1.0


def _float32_range(dtype):
    """The dtype's range as float32 values that lie inside it: float32(2**31 - 1)
    rounds up to 2**31, which would overflow when cast back."""
    info = np.iinfo(dtype)
    low, high = np.float32(info.min), np.float32(info.max)
    if int(high) > info.max:
        high = np.nextafter(high, np.float32(0))
    if int(low) < info.min:
        low = np.nextafter(low, np.float32(0))
    return low, high


def _to_dtype(values, dtype):
    """Round and clip float32 values (changed in place) to an image dtype, only at the very end."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        np.rint(values, out=values)
        np.clip(values, *_float32_range(dtype), out=values)
    return values.astype(dtype, copy=False)


def _pixel_mapping(bias, out_range, scale):
    """The filter's bias and a per-pixel ``out_range`` (not "normalize") as
    ``(offset, absolute)``: ``|v + offset|`` or ``v + offset``."""
    return bias * scale + (scale / 2 if out_range == "offset" else 0.0), out_range == "abs"


def _map_range(values, bias, out_range, scale, dtype):
    """Add the bias and map signed filter results (float32, changed in place)
    to pixel values (``out_range``)."""
    if out_range != "normalize":
        _shift(values, *_pixel_mapping(bias, out_range, scale))
    elif values.size:
        values += np.float32(bias * scale)
        low, high = float(values.min()), float(values.max())
        if high > low:
            values -= np.float32(low)
            values *= np.float32(scale / (high - low))
        else:
            values.fill(0.0)
    if np.dtype(dtype).kind in "iu":
        np.clip(values, *_float32_range(dtype), out=values)
    return values


def _preserves_flat_areas(flt):
    return flt.combine == "single" and abs(float(flt.kernels[0].matrix.sum()) - 1.0) <= _UNIT_SUM_TOLERANCE


def _filter_array(flt, image, mode, cval, backend, strategy, threads=None):
    """Run every kernel of ``flt`` over ``image`` and combine the results (float32)."""
    results = []
    for kernel in flt.kernels:
        out, _ = _convolve_array(image, kernel.matrix, mode, cval, backend, strategy, kernel.factors, threads)
        results.append(out)
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


def apply_filter(
    image,
    flt,
    *,
    mode="reflect",
    cval=0.0,
    backend="auto",
    strategy="auto",
    threads=None,
    alpha="premultiplied",
    has_alpha=None,
    out_range=None,
    catalog=None,
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
    **params
        The filter's parameters, e.g. ``sigma=2.0``.
    """
    array = _as_image(image)
    if array.dtype.kind == "b":
        raise ValueError("boolean images are not supported: convert to uint8 or float first")
    if isinstance(flt, str):
        if catalog is None:
            from imgconv.catalog import load_catalog

            catalog = load_catalog()
        flt = catalog.resolve(flt, params)
    elif params:
        raise ValueError(f"parameters {sorted(params)} given with an already resolved filter")
    if alpha not in ALPHA_POLICIES:
        raise ValueError(f"alpha must be one of {', '.join(ALPHA_POLICIES)}, got {alpha!r}")
    out_range = flt.out_range if out_range is None else out_range
    if out_range not in OUT_RANGES:
        raise ValueError(f"out_range must be one of {', '.join(OUT_RANGES)}, got {out_range!r}")
    mode = borders.canonical_mode(mode)
    cval = _as_cval(cval)
    channels = 1 if array.ndim == 2 else array.shape[2]
    if has_alpha is None:
        has_alpha = channels in (2, 4)
    if has_alpha and channels < 2:
        raise ValueError(f"has_alpha needs at least 2 channels, the image has {channels}")

    scale = full_scale(array.dtype)
    if not has_alpha and flt.combine == "single" and out_range != "normalize" and array.dtype in _FUSED_DTYPES:
        # One kernel and a per-pixel mapping: the kernels store final pixels directly.
        kernel = flt.kernels[0]
        finish = Finish(array.dtype, *_pixel_mapping(flt.bias, out_range, scale))
        result, _ = _convolve_array(array, kernel.matrix, mode, cval, backend, strategy, kernel.factors, threads, finish)
        return result
    colour = array[..., :-1] if has_alpha else array
    filter_args = (mode, cval, backend, strategy, threads)

    if has_alpha and alpha == "premultiplied":
        opacity = array[..., -1:].astype(np.float32) * np.float32(1.0 / scale)
        filtered = _filter_array(flt, colour * opacity, *filter_args)
        if _preserves_flat_areas(flt):
            # Beyond the image the border colour is opaque, so an opaque RGBA
            # image filters exactly like the same RGB image.
            new_opacity = _filter_array(flt, opacity, mode, 1.0, backend, strategy, threads)
            np.clip(new_opacity, 0.0, 1.0, out=new_opacity)
        else:
            new_opacity = opacity
        visible = new_opacity > 1e-6
        if visible.all():
            filtered /= new_opacity
        else:
            # Where the result is fully transparent its colour is invisible but
            # kept meaningful (and an identity filter exact): filter it straight.
            straight = _filter_array(flt, colour, *filter_args)
            filtered = np.where(visible, filtered / np.where(visible, new_opacity, np.float32(1.0)), straight)
        new_alpha = new_opacity * np.float32(scale)
    elif has_alpha and alpha == "separate":
        filtered = _filter_array(flt, colour, *filter_args)
        new_alpha = np.clip(_filter_array(flt, array[..., -1:], *filter_args), 0.0, scale)
    else:
        filtered = _filter_array(flt, colour, *filter_args)
        new_alpha = array[..., -1:] if has_alpha else None

    mapped = _map_range(filtered, flt.bias, out_range, scale, array.dtype)
    if has_alpha:
        mapped = np.concatenate([mapped, new_alpha.astype(np.float32)], axis=-1)
    return _to_dtype(mapped, array.dtype)
