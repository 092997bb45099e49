"""CUDA backend: ``@cuda.jit`` kernels and their host wrappers (NVIDIA's numba-cuda).

Imported only when a plan says ``backend="cuda"`` (``imgconv.engine.plan`` decides, and
checks first that numba-cuda and a GPU are there), so importing imgconv and
the CPU path never import ``numba.cuda``.

The image, as on the CPU, is one (H, W * C) plane of interleaved rows (uint8,
uint16 or float32, read as they are and converted to float32 in the kernel): a
tap one pixel to the right is ``C`` elements along, and one upload and one
download move every channel of an image.

One kernel, ``_correlate_kernel``, runs every pass: the direct convolution and
both 1-D passes of the separable strategy (a 1 x kw and a kh x 1 kernel).

- **Tiling.**  A block of ``tunables.CUDA_BLOCK`` threads computes ``CUDA_BLOCK[1]``
  rows of ``CUDA_BLOCK[0]`` consecutive elements.  It first loads its tile plus the
  kernel's halo into shared memory (every thread loads a few elements,
  coalesced along the row), then each thread sums its taps from shared memory.
- **Weights** come with the taps, in shared memory: the non-zero taps' weights
  and their offsets in the tile are loaded by the block next to the tile.  One
  compiled kernel (per input dtype) then serves every kernel of every size,
  where constant memory would bake the weights into the code and compile again
  (about 0.6 s) for each new weight set -- a new sigma, a new image in a batch
  with a per-image filter.  Every thread of a warp reads the same weight at
  the same time, which shared memory serves as a broadcast.
- **Large kernels** are cut into chunks of kernel rows and columns whose tile
  fits the shared memory budget (``tunables.CUDA_SHARED_BYTES``); the block loads and sums
  one chunk after the other, so any kernel, also one larger than the image,
  runs tiled.  Only the bounding box of a chunk's non-zero taps is loaded.
- **Borders** go through ``borders.map_index``, the same arithmetic the CPU
  backend builds its index maps from, compiled here as a device function:
  a tile element outside the image reads where the mode says, or ``cval``.
  The middle of the image takes a fast path without it.
- **The sum** is formed exactly as the CPU backend forms it
  (``cpu._weighted_sum``): the taps in row-major order (the direct kernel's
  non-zero ones, every tap of a separable pass), four at a time,
  ``((w0 a + w1 b) + w2 c) + w3 d`` added to the running sum, with no fused
  multiply-add (``fmul_rn``/``fadd_rn``); the separable second pass's
  constant ``cval * sum(row)`` and the sum of low-rank pairs follow the CPU
  too.  Where a kernel fits in one chunk the GPU's float32 results are the
  CPU's, bit for bit, so rounding to the image's dtype gives the same pixels.
  tests/test_cuda.py checks it: change the two orders together.

Host side: per thread, one CUDA stream (batch workers overlap their transfers
and kernels) and the device buffers of the last image size (reused while the
size stays the same), and the prepared taps of recent kernels.  Results are
downloaded straight into the returned array: no pinned staging buffer (it
would add a host copy; whether double-buffered pinned transfers pay is owed
to a measurement on a GPU, see docs/performance.md).
"""

from imgconv.engine._cache import configure_numba_cache, guard_numba_cache

configure_numba_cache()

import threading  # noqa: E402
from collections import OrderedDict  # noqa: E402

import numpy as np  # noqa: E402
from numba import cuda, float32, int32  # noqa: E402

try:  # numba-cuda caches its kernels with its own copy of numba's cache files
    from numba.cuda.core import caching as _cuda_caching  # noqa: E402
except ImportError:
    _cuda_caching = None
if _cuda_caching is not None:
    guard_numba_cache(_cuda_caching, check_loads=False)

from imgconv import tunables  # noqa: E402
from imgconv.engine import borders  # noqa: E402

SIMULATOR = bool(cuda.config.ENABLE_CUDASIM)

_map_index = cuda.jit(device=True)(borders.map_index)

if SIMULATOR:
    # numpy float32 scalars: each product and sum is rounded to float32, as on a device.
    @cuda.jit(device=True)
    def _mul(a, b):
        return a * b

    @cuda.jit(device=True)
    def _add(a, b):
        return a + b

else:  # pragma: no cover - needs a GPU
    from numba.cuda import libdevice

    # Round-to-nearest intrinsics are never contracted into a fused multiply-add,
    # so the sums round as the CPU backend's do.
    @cuda.jit(device=True)
    def _mul(a, b):
        return libdevice.fmul_rn(a, b)

    @cuda.jit(device=True)
    def _add(a, b):
        return libdevice.fadd_rn(a, b)


@cuda.jit(device=True)
def _read(src, r, e, row_len, width, channels, mode, cval):
    """Element ``e`` of source row ``r`` (-1: a constant border row) as float32,
    ``e`` outside the row mapped through the border mode pixel by pixel."""
    if r < 0:
        return cval
    if e >= 0 and e < row_len:
        return float32(src[r, e])
    p = e // channels  # floor division: the pixel, also left of the image
    q = _map_index(p, width, mode)
    if q < 0:
        return cval
    return float32(src[r, q * channels + (e - p * channels)])


@cuda.jit(cache=True)
def _correlate_kernel(src, width, channels, mode, cval, chunks, tap_offsets, tap_weights, max_taps, accumulate, out):
    """``out[i, e] (+)= sum_t w_t * ext[i + u_t - top, e + (v_t - left) * C]``.

    ``src`` and ``out`` are (H, W * C).  ``chunks`` rows are ``(row_shift,
    col_shift, first, count, tile_rows, tile_cols)``: the block's tile for a
    chunk starts ``row_shift`` rows and ``col_shift`` elements from its first
    output, and taps ``first .. first + count`` (offset in the tile, weight)
    are summed from it.  Dynamic shared memory holds, in order, the chunk's
    tap offsets (int32), its weights and its tile (float32).
    """
    height = src.shape[0]
    row_len = src.shape[1]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bw = cuda.blockDim.x
    bh = cuda.blockDim.y
    e0 = cuda.blockIdx.x * bw
    i0 = cuda.blockIdx.y * bh
    shared_f = cuda.shared.array(0, float32)
    shared_i = cuda.shared.array(0, int32)  # the same memory: offsets in [0, max_taps)
    tile = 2 * max_taps
    acc = float32(0.0)
    started = False
    for k in range(chunks.shape[0]):
        r0 = i0 + chunks[k, 0]
        c0 = e0 + chunks[k, 1]
        first = chunks[k, 2]
        count = chunks[k, 3]
        tile_rows = chunks[k, 4]
        tile_cols = chunks[k, 5]
        cuda.syncthreads()  # every thread is done with the previous chunk
        for t in range(ty * bw + tx, count, bw * bh):
            shared_i[t] = tap_offsets[first + t]
            shared_f[max_taps + t] = tap_weights[first + t]
        for a in range(ty, tile_rows, bh):
            r = _map_index(r0 + a, height, mode)
            line = tile + a * tile_cols
            for b in range(tx, tile_cols, bw):
                shared_f[line + b] = _read(src, r, c0 + b, row_len, width, channels, mode, cval)
        cuda.syncthreads()
        here = tile + ty * tile_cols + tx
        t = 0
        while t < count:
            # Four taps at a time, as the CPU backend groups them.
            group = min(4, count - t)
            s = _mul(shared_f[max_taps + t], shared_f[here + shared_i[t]])
            if group > 1:
                s = _add(s, _mul(shared_f[max_taps + t + 1], shared_f[here + shared_i[t + 1]]))
            if group > 2:
                s = _add(s, _mul(shared_f[max_taps + t + 2], shared_f[here + shared_i[t + 2]]))
            if group > 3:
                s = _add(s, _mul(shared_f[max_taps + t + 3], shared_f[here + shared_i[t + 3]]))
            if started:
                acc = _add(acc, s)
            else:
                acc = s
                started = True
            t += group
    i = i0 + ty
    e = e0 + tx
    if i < height and e < row_len:
        if accumulate:
            out[i, e] = _add(out[i, e], acc)
        else:
            out[i, e] = acc


# --- host side -----------------------------------------------------------------------------------


class _Taps:
    """A correlation kernel cut into chunks for a block shape and channel count, on the device."""

    def __init__(self, weights, channels, block, stream, skip_zeros):
        kh, kw = weights.shape
        top, left = (kh - 1) // 2, (kw - 1) // 2
        rows, cols = _chunk_shape(kh, kw, channels, block)
        table, offsets, values = [], [], []
        # Row-major, as the CPU backend takes them: the direct kernel's non-zero
        # taps, every tap of a separable pass.
        all_u, all_v = np.nonzero(weights) if skip_zeros else np.indices(weights.shape).reshape(2, -1)
        # Taps grouped by chunk (chunks row-major), row-major within each chunk.
        chunk_u, chunk_v = all_u // rows, all_v // cols
        order = np.lexsort((all_v, all_u, chunk_v, chunk_u))
        all_u, all_v, chunk_id = all_u[order], all_v[order], (chunk_u * kw + chunk_v)[order]
        starts = np.flatnonzero(np.diff(chunk_id, prepend=-1)) if chunk_id.size else np.zeros(0, np.int64)
        for first, last in zip(starts, list(starts[1:]) + [chunk_id.size]):
            us, vs = all_u[first:last], all_v[first:last]
            u_lo, v_lo = int(us.min()), int(vs.min())
            tile_rows = block[1] + int(us.max()) - u_lo
            tile_cols = block[0] + (int(vs.max()) - v_lo) * channels
            table.append((u_lo - top, (v_lo - left) * channels, len(values), int(us.size), tile_rows, tile_cols))
            offsets.extend(((us - u_lo) * tile_cols + (vs - v_lo) * channels).tolist())
            values.extend(weights[us, vs].astype(np.float32).tolist())
        self.max_taps = max((entry[3] for entry in table), default=0)
        largest_tile = max((entry[4] * entry[5] for entry in table), default=0)
        self.shared_bytes = 4 * (2 * self.max_taps + largest_tile)
        # An all-zero kernel has no taps: one empty chunk (nothing loaded, nothing
        # summed: the result is 0) keeps every device array non-empty.
        self.chunks = cuda.to_device(np.array(table or [(0, 0, 0, 0, 0, 0)], np.int64), stream=stream)
        self.offsets = cuda.to_device(np.array(offsets or [0], np.int32), stream=stream)
        self.weights = cuda.to_device(np.array(values or [0.0], np.float32), stream=stream)
        self.count = len(table)  # chunks with taps


def _shared_bytes(rows, cols, channels, block):
    return 4 * (2 * rows * cols + (block[1] + rows - 1) * (block[0] + (cols - 1) * channels))


def _chunk_shape(kh, kw, channels, block):
    """Kernel rows and columns per chunk: the whole kernel where its tile fits
    ``tunables.CUDA_SHARED_BYTES``, else halved (the dimension whose halo is larger first)."""
    rows, cols = kh, kw
    while _shared_bytes(rows, cols, channels, block) > tunables.CUDA_SHARED_BYTES and (rows > 1 or cols > 1):
        if (cols - 1) * channels * (block[1] + rows - 1) >= (rows - 1) * (block[0] + (cols - 1) * channels) and cols > 1:
            cols = (cols + 1) // 2
        else:
            rows = (rows + 1) // 2
    return rows, cols


class _Workspace(threading.local):
    """Per thread: a stream, device buffers by role (kept while the shape stays), prepared taps."""

    def __init__(self):
        self.stream = None
        self.buffers = {}
        self.taps = OrderedDict()

    def get_stream(self):
        if self.stream is None:
            self.stream = cuda.stream()
        return self.stream

    def buffer(self, role, shape, dtype):
        array = self.buffers.get(role)
        if array is None or array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
            self.buffers.pop(role, None)  # free the old one first
            array = cuda.device_array(shape, dtype, stream=self.get_stream())
            self.buffers[role] = array
        return array

    def prepared(self, weights, channels, block, skip_zeros):
        weights = np.ascontiguousarray(weights, np.float64)
        key = (weights.shape, weights.tobytes(), channels, tuple(block), tunables.CUDA_SHARED_BYTES, skip_zeros)
        taps = self.taps.get(key)
        if taps is None:
            taps = _Taps(weights, channels, block, self.get_stream(), skip_zeros)
            self.taps[key] = taps
            if len(self.taps) > tunables.CUDA_TAP_CACHE_SIZE:
                self.taps.popitem(last=False)
        else:
            self.taps.move_to_end(key)
        return taps


_workspace = _Workspace()


def correlate_device(src, out, width, channels, weights, mode, cval, *, accumulate=False, skip_zeros=True, stream=None):
    """Correlate device rows ``src`` (H, W * C) with ``weights`` (centre at
    ``((kh - 1) // 2, (kw - 1) // 2)``) into the float32 device array ``out``
    (added to it when ``accumulate``; zero weights skipped when
    ``skip_zeros``).  Asynchronous on ``stream``."""
    stream = stream if stream is not None else _workspace.get_stream()
    block = tuple(int(b) for b in tunables.CUDA_BLOCK)
    taps = _workspace.prepared(weights, channels, block, bool(skip_zeros))
    height, row_len = src.shape
    grid = ((row_len + block[0] - 1) // block[0], (height + block[1] - 1) // block[1])
    if grid[1] > 65535:
        raise ValueError(f"image of {height} rows is too tall for the CUDA backend (at most {65535 * block[1]})")
    code = borders.mode_code(mode)
    _correlate_kernel[grid, block, stream, taps.shared_bytes](
        src, width, channels, code, np.float32(cval), taps.chunks, taps.offsets, taps.weights,
        taps.max_taps, bool(accumulate), out,
    )  # fmt: skip


def convolve_device(src, out, width, channels, plan, mode, cval, *, stream=None):
    """Run ``plan`` (direct or separable) from device rows ``src`` into float32 device rows ``out``."""
    stream = stream if stream is not None else _workspace.get_stream()
    if plan.strategy == "direct":
        correlate_device(src, out, width, channels, plan.kernel[::-1, ::-1], mode, cval, stream=stream)
        return
    if plan.strategy != "separable":
        raise ValueError(f"strategy {plan.strategy!r} does not run on the CUDA backend")
    across = _workspace.buffer("across", out.shape, np.float32)
    for index, (column, row) in enumerate(plan.factors):
        row = np.asarray(row, np.float64)
        column = np.asarray(column, np.float64)
        correlate_device(
            src, across, width, channels, row[::-1].reshape(1, -1), mode, cval, skip_zeros=False, stream=stream
        )
        # Rows beyond the image hold cval in every column, so after the first
        # pass they read cval * sum(row): the second pass's constant.
        second_cval = float(cval) * float(row.sum())
        correlate_device(
            across, out, width, channels, column[::-1].reshape(-1, 1), mode, second_cval,
            accumulate=index > 0, skip_zeros=False, stream=stream,
        )  # fmt: skip


def run(plan, rows, channels, mode, cval, finish, threads):
    """``engine.run``'s entry point: (H, W * C) rows up, ``plan`` (direct or
    separable) on the GPU, float32 rows down (one upload, one download), left
    to the shared finish."""
    stream = _workspace.get_stream()
    src = _workspace.buffer("src", rows.shape, rows.dtype)
    src.copy_to_device(rows, stream=stream)
    out = _workspace.buffer("out", rows.shape, np.float32)
    convolve_device(src, out, rows.shape[1] // channels, channels, plan, mode, cval, stream=stream)
    result = np.empty(rows.shape, np.float32)
    out.copy_to_host(result, stream=stream)
    stream.synchronize()
    return result, False
