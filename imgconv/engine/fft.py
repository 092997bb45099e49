"""FFT convolution for large kernels: overlap-save over tiles, in parallel.

The output is cut into tiles; each tile's input region (the tile plus the
kernel's reach, read through the border index maps, so every mode is exact) is
transformed with numpy's float32 real FFT at a size chosen for speed,
multiplied by the kernel's spectrum and transformed back; the part of the
result free of wrap-around is the tile's output.  Tiles are independent and
numpy's FFT releases the GIL, so a thread pool runs them side by side.
"""

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imgconv.engine import borders

# Transform sizes numpy's pocketfft handles fast (products of 2, 3 and 5).
FAST_SIZES = sorted({2**a * 3**b * 5**c for a in range(13) for b in range(3) for c in range(2) if 64 <= 2**a * 3**b * 5**c <= 8192})

# Measured cost of one tile, in ns per pixel of the N x N tile on one thread
# (gather, forward and inverse float32 FFT, product, copy-out; bench/calibrate.py).
# Small tiles pay Python's per-tile overhead, large ones leave the L2 cache.
TILE_NS = {64: 21.0, 96: 12.4, 128: 9.4, 160: 8.1, 192: 7.3, 256: 6.7, 320: 6.7, 384: 6.7, 512: 6.3, 640: 6.8, 768: 7.7, 1024: 9.2}
LARGE_TILE_NS = 12.0


def _tile_ns(n):
    known = [size for size in TILE_NS if size <= n]
    if n > max(TILE_NS):
        return LARGE_TILE_NS
    return TILE_NS[max(known)] if known else TILE_NS[min(TILE_NS)]


def _tiles(image_shape, kernel_shape, n):
    height, width = image_shape[:2]
    kh, kw = kernel_shape
    return math.ceil(height / (n - kh + 1)) * math.ceil(width / (n - kw + 1))


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


def convolve_fft(image, kernel, mode, cval, threads):
    """True convolution of an (H, W) or (H, W, C) image by tiled FFTs (float32)."""
    from imgconv.engine import cpu  # numba: only when there is work (the planner imports this module)

    kernel = np.asarray(kernel, np.float64)
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    kh, kw = kernel.shape
    n = tile_size(image.shape, kernel.shape)
    out_h, out_w = n - kh + 1, n - kw + 1
    top, left = (kh - 1) // 2, (kw - 1) // 2
    # Enough of the extended image for the last (partial) tile's full region.
    rows_needed = math.ceil(height / out_h) * out_h + kh - 1
    cols_needed = math.ceil(width / out_w) * out_w + kw - 1
    row_map = borders.index_map(height, top, rows_needed - height - top, mode)
    col_map = borders.index_map(width, left, cols_needed - width - left, mode)
    spectrum = np.fft.rfft2(kernel.astype(np.float32), s=(n, n)).astype(np.complex64)
    src = cpu.as_rows(image)
    out = np.empty(image.shape, np.float32)
    out_rows = out.reshape(height, width * channels)
    cval32 = np.float32(cval)

    scratch = threading.local()

    def run_tile(origin):
        i0, j0 = origin
        if not hasattr(scratch, "region"):  # buffers per worker thread, reused for every tile
            scratch.region = np.empty((n, n), np.float32)
            scratch.spectrum = np.empty((n, n // 2 + 1), np.complex64)
        region, product = scratch.region, scratch.spectrum
        bh, bw = min(out_h, height - i0), min(out_w, width - j0)
        for c in range(channels):
            cpu.gather_region(src, row_map[i0 : i0 + n], col_map[j0 : j0 + n], channels, c, cval32, region)
            np.fft.rfft2(region, out=product)
            product *= spectrum
            # (irfft2's out= gives wrong results in numpy 2.4: let it allocate.)
            result = np.fft.irfft2(product, s=(n, n))
            # Rows/columns before kh-1 / kw-1 hold wrap-around: the rest is exact.
            out_rows[i0 : i0 + bh, j0 * channels + c : (j0 + bw) * channels : channels] = result[
                kh - 1 : kh - 1 + bh, kw - 1 : kw - 1 + bw
            ]

    origins = [(i0, j0) for i0 in range(0, height, out_h) for j0 in range(0, width, out_w)]
    # Even one thread runs in a worker: numpy's FFT measured twice as fast there
    # as in the main thread (its temporaries come from a per-thread malloc arena
    # instead of fresh pages each call).
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(origins)))) as pool:
        list(pool.map(run_tile, origins))
    return out
