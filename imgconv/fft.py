"""FFT convolution for large kernels: overlap-save over tiles, in parallel.

The output is cut into tiles; each tile's input region (the tile plus the
kernel's reach, read through the border index maps, so every mode is exact) is
transformed with numpy's float32 real FFT at a size chosen for speed,
multiplied by the kernel's spectrum and transformed back; the part of the
result free of wrap-around is the tile's output.  Tiles are independent and
numpy's FFT releases the GIL, so a thread pool runs them side by side.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imgconv import borders, cpu

# Transform sizes numpy's pocketfft handles fast (products of 2, 3 and 5).
FAST_SIZES = sorted({2**a * 3**b * 5**c for a in range(13) for b in range(3) for c in range(2) if 32 <= 2**a * 3**b * 5**c <= 8192})


def _transform_cost(n):
    # Relative cost of one forward and one inverse real transform of n x n.
    return n * n * math.log2(n * n)


def tile_size(image_shape, kernel_shape):
    """The transform size N (N x N tiles) that costs least for the whole image.

    Each tile yields ``(N - kh + 1) x (N - kw + 1)`` output pixels; the cost
    counts the tiles needed to cover the image, partial ones included.
    """
    height, width = image_shape[:2]
    kh, kw = kernel_shape
    best = None
    for n in FAST_SIZES:
        out_h, out_w = n - kh + 1, n - kw + 1
        if out_h < 1 or out_w < 1:
            continue
        tiles = math.ceil(height / out_h) * math.ceil(width / out_w)
        cost = tiles * _transform_cost(n)
        if best is None or cost < best[0]:
            best = (cost, n)
        if out_h >= height and out_w >= width:
            break  # larger sizes only add work
    return best[1]


def fft_cost_per_pixel(image_shape, kernel_shape):
    """Transform work per output pixel (in units of ``n^2 log2 n^2``), for the cost model."""
    height, width = image_shape[:2]
    if height * width == 0:
        return 0.0
    n = tile_size(image_shape, kernel_shape)
    kh, kw = kernel_shape
    tiles = math.ceil(height / (n - kh + 1)) * math.ceil(width / (n - kw + 1))
    return tiles * _transform_cost(n) / (height * width)


def convolve_fft(image, kernel, mode, cval, threads):
    """True convolution of an (H, W) or (H, W, C) image by tiled FFTs (float32)."""
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
    spectrum = np.fft.rfft2(kernel.astype(np.float32), s=(n, n))
    src = cpu.as_rows(image)
    out = np.empty(image.shape, np.float32)
    out_rows = out.reshape(height, width * channels)
    cval32 = np.float32(cval)

    def run_tile(origin):
        i0, j0 = origin
        region = np.empty((n, n), np.float32)
        bh, bw = min(out_h, height - i0), min(out_w, width - j0)
        for c in range(channels):
            cpu.gather_region(src, row_map[i0 : i0 + n], col_map[j0 : j0 + n], channels, c, cval32, region)
            result = np.fft.irfft2(np.fft.rfft2(region) * spectrum, s=(n, n))
            # Rows/columns before kh-1 / kw-1 hold wrap-around: the rest is exact.
            out_rows[i0 : i0 + bh, j0 * channels + c : (j0 + bw) * channels : channels] = result[
                kh - 1 : kh - 1 + bh, kw - 1 : kw - 1 + bw
            ]

    origins = [(i0, j0) for i0 in range(0, height, out_h) for j0 in range(0, width, out_w)]
    if threads <= 1 or len(origins) == 1:
        for origin in origins:
            run_tile(origin)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run_tile, origins))
    return out
