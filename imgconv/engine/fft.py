"""FFT convolution for large kernels: overlap-save over tiles, in parallel.

The output is cut into tiles; each tile's input region (the tile plus the
kernel's reach, read through the border index maps, so every mode is exact) is
transformed with numpy's float32 real FFT at a size chosen for speed,
multiplied by the kernel's spectrum and transformed back; the part of the
result free of wrap-around is the tile's output.  Tiles are independent and
numpy's FFT releases the GIL, so helper threads (``engine/helpers.py``) run them side by side.
"""

import math
import threading
from collections import OrderedDict

import numpy as np

from imgconv import tunables
from imgconv.engine import borders, helpers
from imgconv.engine.finish import finish_array

# Transform sizes numpy's pocketfft handles fast (products of 2, 3 and 5; 7 is slower).
FAST_SIZES = sorted({2**a * 3**b * 5**c for a in range(13) for b in range(3) for c in range(2) if 64 <= 2**a * 3**b * 5**c <= 8192})

# Kept between calls: the kernel's spectrum (a float64 transform of an N x N tile, 5 ms at
# N = 640, a twentieth of a 31x31 over 2048 x 2048 on one thread), up to this many bytes
# of spectra in all, the least recently used dropped first; and each thread's tile
# buffers, for tiles up to KEPT_BUFFER_SIZE (three arrays of about 4 N^2 bytes: 6 MB at
# N = 720), whose pages would otherwise fault in again on every call.
SPECTRA_BYTES = 64 << 20
KEPT_BUFFER_SIZE = 1024

_spectra = OrderedDict()
_spectra_lock = threading.Lock()
_scratch = threading.local()


def _spectrum(kernel, n):
    """The kernel's spectrum for N x N tiles (complex64, (N, N // 2 + 1))."""
    key = (kernel.shape, kernel.dtype.str, kernel.tobytes(), n)
    with _spectra_lock:
        found = _spectra.get(key)
        if found is not None:
            _spectra.move_to_end(key)
            return found
    # In float64: numpy's float32 forward transform at the default norm is its slow loop
    # (see run_fft's tiles), and the spectrum is the more exact for it.
    spectrum = np.fft.rfft2(kernel.astype(np.float64), s=(n, n)).astype(np.complex64)
    spectrum.flags.writeable = False  # (shared by every call with this kernel)
    if spectrum.nbytes > SPECTRA_BYTES:
        return spectrum
    with _spectra_lock:
        _spectra[key] = spectrum
        while sum(value.nbytes for value in _spectra.values()) > SPECTRA_BYTES:
            _spectra.popitem(last=False)
    return spectrum


def _buffers(local, n, out_h):
    """This thread's tile buffers (region, spectrum product, result) for N x N tiles, kept
    in ``local``."""
    kept = getattr(local, "buffers", None)
    if kept is None or kept[0].shape != (n, n) or kept[2].shape[0] != out_h:
        kept = (np.empty((n, n), np.float32), np.empty((n, n // 2 + 1), np.complex64), np.empty((out_h, n), np.float32))
        local.buffers = kept
    return kept


def _tile_ns(n):
    """Measured ns per pixel of an N x N tile (``tunables.FFT_TILE_NS``)."""
    table = tunables.FFT_TILE_NS
    if n > max(table):
        return tunables.FFT_LARGE_TILE_NS
    known = [size for size in table if size <= n]
    return table[max(known)] if known else table[min(table)]


def _tiles(image_shape, kernel_shape, n):
    height, width = image_shape[:2]
    kh, kw = kernel_shape
    return math.ceil(height / (n - kh + 1)) * math.ceil(width / (n - kw + 1))


def _interior_starts(index_map, starts, n):
    """For each tile start, the source index its ``n`` map entries begin at where they are
    consecutive source indices (the tile does not reach a border along this axis), else -1."""
    out = {}
    for start in starts:
        seg = index_map[start : start + n]
        plain = seg.size == n and seg[0] >= 0 and seg[-1] - seg[0] == n - 1 and bool(np.all(np.diff(seg) == 1))
        out[start] = int(seg[0]) if plain else -1
    return out


def tile_size(image_shape, kernel_shape):
    """The transform size N (N x N tiles) that costs least for the whole image,
    counting the tiles needed to cover it, partial ones included."""
    height, width = image_shape[:2]
    kh, kw = kernel_shape
    best = None
    # A kernel longer than the largest listed size gets the next power of two.
    reach = max(kh, kw)
    candidates = FAST_SIZES if reach <= FAST_SIZES[-1] else [1 << (reach - 1).bit_length()]
    for n in candidates:
        if n < kh or n < kw:
            continue
        cost = _tiles(image_shape, kernel_shape, n) * n * n * _tile_ns(n)
        if best is None or cost < best[0]:
            best = (cost, n)
        if n - kh + 1 >= height and n - kw + 1 >= width:
            break  # one tile covers the image: larger sizes only add work
    return best[1]


def fft_ns_per_pixel(image_shape, kernel_shape):
    """Estimated ns per output pixel and channel on one thread (for the planner)."""
    height, width = image_shape[:2]
    if height * width == 0:
        return 0.0
    n = tile_size(image_shape, kernel_shape)
    return _tiles(image_shape, kernel_shape, n) * n * n * _tile_ns(n) / (height * width)


def store_tile(out_rows, piece, i0, j0, channels, channel, finish):
    """``piece`` (one channel of a tile's float32 results, changed in place) finished into
    ``out_rows[i0 + a, (j0 + b) * channels + channel]``; ``cpu.store_tile`` in numpy."""
    bh, bw = piece.shape
    target = out_rows[i0 : i0 + bh, j0 * channels + channel : (j0 + bw) * channels : channels]
    target[...] = piece if finish.plain else finish_array(piece, finish)


def run_fft(plan, rows, channels, mode, cval, finish, threads, *, gather=None, store=None, out=None):
    """True convolution of (H, W * C) rows with ``plan.kernel`` by tiled FFTs,
    in ``threads`` worker threads, each tile finished (``engine.finish``) as it is stored
    (into ``out`` when given: rows of the result's shape and ``finish.dtype``).

    ``gather`` fills a tile's input region (``cpu.gather_region``'s signature), ``store``
    finishes and stores its results (:func:`store_tile`'s); None: the compiled
    ``cpu.gather_region``, and ``cpu.store_tile`` for 8- and 16-bit results (one pass where
    numpy's finish takes four), else :func:`store_tile` (``vector.run_fft`` passes numpy's).
    """
    if gather is None:
        from imgconv.engine import cpu  # numba: only when there is work (the planner imports this module)

        gather = cpu.gather_region
        if store is None and np.dtype(finish.dtype) in (np.uint8, np.uint16):
            spec = finish.spec()
            store = lambda out_rows, piece, i0, j0, channels, channel, finish: cpu.store_tile(out_rows, piece, i0, j0, channels, channel, spec)  # noqa: E731
    store = store_tile if store is None else store

    kernel = plan.kernel
    height, width = rows.shape[0], rows.shape[1] // channels
    kh, kw = kernel.shape
    n = tile_size((height, width), kernel.shape)
    out_h, out_w = n - kh + 1, n - kw + 1
    top, left = (kh - 1) // 2, (kw - 1) // 2
    # Enough of the extended image for the last (partial) tile's full region.
    rows_needed = math.ceil(height / out_h) * out_h + kh - 1
    cols_needed = math.ceil(width / out_w) * out_w + kw - 1
    row_map = borders.index_map(height, top, rows_needed - height - top, mode)
    col_map = borders.index_map(width, left, cols_needed - width - left, mode)
    spectrum = _spectrum(kernel, n)
    out_rows = helpers.new_rows(rows.shape, finish.dtype, threads) if out is None else out
    cval32 = np.float32(cval)

    # One work item a tile and channel: more items than tiles share out evenly among the
    # threads (nine tiles of a 2048 x 2048 image on two threads left one doing five).
    origins = [(i0, j0, c) for i0 in range(0, height, out_h) for j0 in range(0, width, out_w) for c in range(channels)]
    # Tiles clear of every border are a strided slice of the rows: numpy copies one in a
    # seventh of the index-mapped gather's time (0.07 against 0.47 ms for 720 x 720 grey).
    row_starts = _interior_starts(row_map, range(0, height, out_h), n)
    col_starts = _interior_starts(col_map, range(0, width, out_w), n)
    scratch = _scratch if n <= KEPT_BUFFER_SIZE else threading.local()  # (larger: this call's only)

    def run_tile(origin):
        i0, j0, c = origin
        region, product, result = _buffers(scratch, n, out_h)
        bh, bw = min(out_h, height - i0), min(out_w, width - j0)
        r0, c0 = row_starts[i0], col_starts[j0]
        if r0 >= 0 and c0 >= 0:
            np.copyto(region, rows[r0 : r0 + n, c0 * channels + c : (c0 + n) * channels : channels], casting="unsafe")
        else:
            gather(rows, row_map[i0 : i0 + n], col_map[j0 : j0 + n], channels, c, cval32, region)
        # One axis at a time, in place, into the reused buffers (irfft2's out= gives
        # wrong results in numpy 2.4, and it allocates its intermediate).  norm="ortho"
        # both ways (1/n each, 1/n^2 in all, as the default): numpy's default forward
        # passes the integer 1 as its scale, which runs complex64 through a slower loop,
        # 2-8x the inverse's time (4.5 against 0.53 ms for 512 rows of 512, numpy 2.4).
        np.fft.rfft(region, axis=1, out=product, norm="ortho")
        np.fft.fft(product, axis=0, out=product, norm="ortho")
        product *= spectrum
        np.fft.ifft(product, axis=0, out=product, norm="ortho")
        # Rows/columns before kh-1 / kw-1 hold wrap-around: only the bh rows after
        # them are transformed back along the rows.
        np.fft.irfft(product[kh - 1 : kh - 1 + bh], n=n, axis=1, out=result[:bh], norm="ortho")
        # Finished here, tile by tile in the worker threads, while it is in cache.
        store(out_rows, result[:bh, kw - 1 : kw - 1 + bw], i0, j0, channels, c, finish)

    # Not in the main thread, even on one thread: numpy's FFT measured twice as fast in
    # another (its temporaries come from a per-thread malloc arena instead of fresh pages
    # each call).
    count = max(1, min(threads, len(origins)))
    helpers.in_threads(run_tile, origins, count, here=threading.current_thread() is not threading.main_thread())
    return out_rows, True
