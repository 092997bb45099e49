"""Every tunable number in one place, each with the measurement or reason that set it.

Sizes and thresholds that trade speed against memory or latency, not choices
that change results (those are in :mod:`imgconv.choices`).  Modules read them
as ``tunables.NAME`` at the moment they use them, so a test or a benchmark can
patch one (``monkeypatch.setattr(tunables, "CUDA_BLOCK", (4, 4))``).
"""

# --- CPU kernels (engine/cpu.py) ---------------------------------------------------------------

# Elements of an output row processed per pass over the taps (measured on a
# 4096-wide image: 4096 ran 5-8 % faster than 512, 1024 or 2048; the windows
# then live in the 1 MiB L2 cache).  Passed to the kernels at each call.  Re-checked
# on 2026-12-01 with the one-sweep kernels (3x3 and 5x5, 2048 and 4096 wide): 2048 and
# 4096 within 2 % of each other, 1024 2-4 % and 512 5-10 % slower.
CPU_COLUMN_TILE = 4096

# float32 rows are read in place (no line buffer) when the elements at a row's ends
# whose taps leave the row -- (kw - 1) * C of them, summed apart over every tap --
# cost at most this many element-taps per element of the row; otherwise (narrow
# images, long kernels) rows go through line buffers.  Both give the same bits.
# (A 5x5 on a 4096-wide image: 4 * 25 = 100 <= 1024, in place.)  Read by
# engine/cpu.py in Python at each call, so a test can patch it.
CPU_IN_PLACE_EDGE_WORK = 0.25

# Bands of output rows per thread: a few balance the load, and each band
# re-reads kh - 1 rows at its top.
CPU_BANDS_PER_THREAD = 4

# Memory of dropped results of 32 MiB or more kept for the next result of the same
# size (engine/helpers.py new_rows), at most this many bytes; a result of another size
# releases them all.  A fresh 64 MB result's page faults cost 8.4 ms, as long as a 3x3
# over its image; a float32 3x3 over 4096 x 4096 took 11.9 ms in recycled memory against
# 20.5 ms fresh on one thread, 11.9 against 17.7 on two (one process, 50 ms before each
# call).  0: every large result is mapped afresh, and dropped memory goes back at once
# (what is kept goes at the next large result).
RESULT_RECYCLE_BYTES = 256 << 20

# --- the band driver (engine/stream.py: chains, repeat, strength, linear light, alpha) ----------

# Elements of a band's float32 rows (about 6 MiB): each step of a chain keeps one such
# buffer (plus its halo rows), so a chain's extra memory is a few of them, while the halo
# rows recomputed per band (kh - 1 of each later step) stay a modest share of the band
# (117 rows of a 4240-pixel RGB image; a later Gaussian of sigma 2, 17 taps, makes the
# step before it compute 16 rows more a band: 14 % of that step's rows).
STREAM_BAND_ELEMENTS = 1_500_000
# That is per band buffer of one band pipeline: all the pipelines' buffers together (one per
# thread, each with a float32 buffer per step but the last and what its steps make per band)
# hold as many elements, so threads cost no memory -- or this share of the image's elements
# where that is more (a quarter of an 8-bit image's bytes: the 100 MP peak memory target is
# 1.2x the single filter's, which holds the input and the output).  On a 12240-pixel RGB
# image 1.5 M elements are 40 rows, shared by two pipelines 20 each, and a Gaussian of sigma 2
# before a sharpen re-makes 16 row-pass rows a band; the share gives 255 rows.  The 100 MP
# chain in process, 2 threads, fastest of 7 (the single Gaussian 0.17 s): 0.37 s at 64 rows,
# 0.36 s at 128, 0.28 s at 256, 0.25 s at 512 (docs/performance.md, "Every path streams").
# On a 12 MP RGB image about as before: a chain of two, 2.25 M elements in all, 88 rows a band.
STREAM_BAND_SHARE = 1 / 16
# When the rows recomputed for the halos of every band would exceed this share of the
# rows computed once, bands grow (a kernel larger than the image, wrap mode on a short
# image), up to one band of the whole image: then each step keeps a full-size result.
STREAM_MAX_RECOMPUTE = 0.5

# --- FFT (engine/fft.py) -----------------------------------------------------------------------

# The planner's CPU cost model, one fit per kind of CPU (bench/calibrate.py prints one), the
# one of this machine's kind taken (CPU_COST_FIT).  Every figure is ns per output pixel and
# channel on one thread, 2048x2048 float32 (docs/performance.md, "CPU kernels"):
# - DIRECT_PIXEL_NS, DIRECT_TAP_NS, DIRECT_GROUP_TAP_NS: a direct pass reading, converting
#   and writing a pixel, and each non-zero tap: of a kernel whose sweeps hold every tap in
#   registers (engine/sweeps.py: dense 3x3 and 5x5, the fused tap counts), else of one
#   summed four taps a sweep (7x7 and up).  Fitted apart since the Intel host, where a
#   grouped tap costs 3x a held one and one line for both put a dense 13x13 at 5.9 ns
#   against its measured 7.8; the Zen fits, made before, hold one line for both;
# - SEPARABLE_PIXEL_NS: a separable pair's two passes and its ring of row results, beside its
#   taps, fitted with the tap cost over 3x3 to 7x7, where it meets direct (it had been
#   2 x DIRECT_PIXEL_NS, which left the rank-1 5x5 to separable, measured 15-35 % slower);
# - PASS_SUM_NS: adding one more separable pair's result (a float32 add over the image);
# - FFT_TILE_NS: one FFT tile, per pixel of the N x N tile (gather, forward and inverse
#   float32 FFT, product, copy-out; per size, process CPU time).  Small tiles pay Python's
#   per-tile overhead, large ones leave the L2 cache.  A size costs the entry of the largest
#   key not above it; FFT_LARGE_TILE_NS, tiles beyond the table (kernels longer than 1024
#   taps): the 1024 cost grown by the cache misses of a 2048 tile (by 1.15, measured on the
#   AVX-512 host: 10.8 beside 9.4, process time, median of three rounds).
# The direct and FFT constants of one fit come from the same runs: fitted on different days
# they had drifted apart by a third, and a dense 17x17 was planned direct where the FFT
# measured 20 % faster.  The kinds differ most there: on the AVX2 host the FFT's tiles
# cost 2.5-3x the Zen 5 host's and direct taps 2.5x, so with the Zen 5 fit dense 13x13
# and 17x17 kernels went to the FFT, 2.2x and 1.4x slower than direct there; on the
# Intel AVX-512 host grouped direct taps cost 2x Zen 5's, the FFT's tiles 1.3x, and with
# the Zen 5 fit dense 13x13 kernels went direct, 1.15-1.25x slower than the FFT there.
CPU_COST_FITS = {
    # AMD Zen 5 (AVX-512), 2026-12-02, after the kernels that sweep four rows at a time:
    # each the median of three runs on a quiet machine.
    "avx512-amd": dict(
        DIRECT_PIXEL_NS=0.271,
        DIRECT_TAP_NS=0.0228,
        DIRECT_GROUP_TAP_NS=0.0228,
        SEPARABLE_PIXEL_NS=0.62,
        PASS_SUM_NS=0.10,
        FFT_TILE_NS={64: 31.9, 96: 13.5, 128: 9.3, 160: 7.9, 192: 6.8, 256: 5.9, 288: 6.1, 320: 5.7, 384: 5.5, 480: 5.5, 512: 5.3, 576: 5.6, 640: 5.4, 720: 6.0, 768: 5.9, 960: 7.0, 1024: 6.2},
        FFT_LARGE_TILE_NS=7.1,
    ),
    # Intel Xeon with AVX-512 and AMX (a 2-vCPU VM; llvmlite names it rocketlake),
    # 2026-12-02 (sixth session): each the mean of three runs; the large-tile cost the
    # 1024 one grown by 1.15.  Two near calls: a rank-1 5x5 is planned direct (separable
    # measured 0-12 % faster), a dense 13x13 at 2048 x 2048 the FFT by 1 % of its estimate
    # (it measured 8-14 % faster), both within a run's spread of the model.
    "avx512-intel": dict(
        DIRECT_PIXEL_NS=0.399,
        DIRECT_TAP_NS=0.0144,
        DIRECT_GROUP_TAP_NS=0.0434,
        SEPARABLE_PIXEL_NS=0.413,
        PASS_SUM_NS=0.27,
        FFT_TILE_NS={64: 19.0, 96: 9.5, 128: 8.0, 160: 7.4, 192: 7.0, 256: 7.0, 288: 7.2, 320: 6.8, 384: 7.0, 480: 7.0, 512: 6.8, 576: 7.0, 640: 7.0, 720: 7.6, 768: 7.3, 960: 7.3, 1024: 7.5},
        FFT_LARGE_TILE_NS=8.6,
    ),
    # AMD Zen 3 (AVX2, no AVX-512), 2026-12-02 (fifth session): each the mean of two runs
    # (--rounds 3 and 5) on a quiet machine; the large-tile cost the 1024 one grown by 1.15.
    "avx2": dict(
        DIRECT_PIXEL_NS=0.85,
        DIRECT_TAP_NS=0.0572,
        DIRECT_GROUP_TAP_NS=0.0572,
        SEPARABLE_PIXEL_NS=1.44,
        PASS_SUM_NS=0.56,
        FFT_TILE_NS={64: 59.0, 96: 34.3, 128: 25.9, 160: 22.1, 192: 19.8, 256: 17.1, 288: 17.2, 320: 15.6, 384: 15.8, 480: 15.9, 512: 14.1, 576: 16.0, 640: 15.6, 720: 17.8, 768: 18.4, 960: 20.4, 1024: 19.7},
        FFT_LARGE_TILE_NS=22.7,
    ),
}


def _cpu_kind(cpuinfo: str = "/proc/cpuinfo") -> str:
    """This CPU's key in :data:`CPU_COST_FITS`, from the first processor's ``vendor_id`` and
    ``flags`` lines in ``cpuinfo``: "avx512-intel" (GenuineIntel with ``avx512f``),
    "avx512-amd" (any other vendor with it), else "avx2".

    Read here rather than asked of numba or llvmlite, which planning does not import.
    Where there is no such file (not Linux), "avx2": the commoner kind.
    """
    vendor, flags = "", None
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    if flags is None or "avx512f" not in flags:
        return "avx2"
    return "avx512-intel" if vendor == "GenuineIntel" else "avx512-amd"


#: The fit the planner uses: this machine's kind of CPU.
CPU_COST_FIT = _cpu_kind()
_FIT = CPU_COST_FITS[CPU_COST_FIT]
FFT_TILE_NS = _FIT["FFT_TILE_NS"]
FFT_LARGE_TILE_NS = _FIT["FFT_LARGE_TILE_NS"]

# --- GPU (engine/cuda.py) ----------------------------------------------------------------------

# Threads per block: x along a row's elements (a warp reads 32 consecutive
# elements), y down the rows.  Read at each launch, so tests patch it smaller.
CUDA_BLOCK = (32, 8)

# Dynamic shared memory one block may use: the limit every CUDA GPU grants
# without an opt-in.  Tile, weights and tap offsets of a chunk fit in it.
CUDA_SHARED_BYTES = 48 * 1024

# Prepared taps kept per thread (kernels of a batch's filter, of a combination).
CUDA_TAP_CACHE_SIZE = 16

# --- planning (engine/plan.py) -----------------------------------------------------------------

# CPU cost model: this CPU's fit (CPU_COST_FITS, above).
DIRECT_PIXEL_NS = _FIT["DIRECT_PIXEL_NS"]
DIRECT_TAP_NS = _FIT["DIRECT_TAP_NS"]
DIRECT_GROUP_TAP_NS = _FIT["DIRECT_GROUP_TAP_NS"]
SEPARABLE_PIXEL_NS = _FIT["SEPARABLE_PIXEL_NS"]
PASS_SUM_NS = _FIT["PASS_SUM_NS"]

# A CPU pass the cost model above expects to take at most this long (one thread) runs in
# the calling thread; longer ones run in engine/run.py's kernel thread, where Ctrl-C still
# reaches the main thread while they run (here it waits for the pass to end).  Handing a
# pass over costs two thread wake-ups, and its fresh output pages fault in more slowly
# from the other thread: a 13-tap Gaussian over 4096 x 4096 RGB (float32 out, one thread)
# took 78 ms there against 60 ms here, its system time 22 against 10 ms (medians of 6).
KERNEL_THREAD_MIN_NS = 250e6

# Multiply-adds (elements x taps) a process runs in numpy (engine/vector.py, the same sums)
# before it imports numba: about what importing numba and loading its cached kernels costs
# (~0.3 s) over what numpy costs more per multiply-add (~0.2 ns against ~0.03 ns, one
# thread), so numpy is never more than twice the better choice (engine/compiled.py;
# docs/performance.md, "Start-up").  A 12 MP Gaussian of sigma 2 is 1.2e9.
VECTOR_MAX_WORK = 1.5e9
# The same budget in a resident worker's copy (imgconv/resident.py), where numba is imported
# but no kernel is loaded: loading the cached kernels there costs ~35-45 ms (a 512x512 RGB
# 3x3 in a fresh copy: 40-55 ms for the first call, 8 ms for the next), ~2e8 multiply-adds
# of numpy's extra cost.
VECTOR_COPY_MAX_WORK = 2e8

# The FFT is costed only for kernels of at least this many taps.  Its best
# measured cost is ~5.3 ns per tile pixel on the Zen 5 host (~6.4 on the Intel AVX-512
# one, ~14 on the AVX2 one), which direct (DIRECT_PIXEL_NS + DIRECT_TAP_NS * taps) only
# exceeds beyond ~180-230 taps:
# below 7x7 the estimate is wasted work, and the margin keeps it safe if the
# tables are re-measured.
FFT_MIN_TAPS = 49

# backend="auto" computes on a GPU only for images of at least this many values
# (pixels x channels).  NOT MEASURED (no GPU was available when it was set): an
# estimate from PCIe transfer (~25 GB/s: 4 Mvalues go up as uint8 in ~0.2 ms and
# come down as float32 in ~0.7 ms) against the CPU's ~2 ms for a 5x5 on two
# cores (the cost model above), plus the GPU's one-off start per process.
# bench/gpu.py --threshold measures the crossover; docs/performance.md, "GPU".
CUDA_AUTO_MIN_VALUES = 4 * 1024 * 1024

# Strategy choice on the GPU, in tap-equivalents per output value.  NOT MEASURED:
# a pass reads and writes the image once through global memory, taken as worth
# this many taps summed from shared memory.
CUDA_PASS_TAPS = 8

# backend="auto" leaves work costing more than this many taps per value on the
# GPU (a dense kernel beyond about 128x128) to the CPU's FFT, the GPU having no
# FFT route.  NOT MEASURED: tiled direct on a GPU sums some 10^12 taps a second,
# so 8192^2 values at this cost take ~0.1-0.2 s, about the CPU FFT's time.
CUDA_AUTO_MAX_TAPS = 128 * 128

# Plans kept per process (an LRU): a batch's filter, a chain's steps, alpha passes.
# A plan holds its kernel, so kernels above PLAN_MEMO_MAX_TAPS (0.5 MB) are
# planned afresh each time (their costly part, the rank test, is memoised apart).
PLAN_CACHE_SIZE = 256
PLAN_MEMO_MAX_TAPS = 65536

# Kernels up to this short side get an exact thin SVD for the rank test; longer
# ones a randomized truncated one (the top MAX_RANK + RANK_OVERSAMPLE vectors),
# whose residual is then computed exactly, so a false "low rank" is impossible.
RANK_EXACT_SVD_SIDE = 64
RANK_OVERSAMPLE = 5
RANK_POWER_ITERATIONS = 2

# --- batch (batch/) ----------------------------------------------------------------------------

# How long the main process waits for results before it looks at Ctrl-C again
# (local workers' pipes, Dask futures): a Ctrl-C is acted on within this; waking
# five times a second costs nothing measurable against files of ~100 ms or more.
BATCH_POLL_SECONDS = 0.2

# How long a local worker process gets to exit once told to stop (or to be
# reaped once it died) before it is killed: a stopping worker exits in well
# under a second (numba's tear-down is ~0.25 s); this leaves room on a loaded machine.
BATCH_JOIN_SECONDS = 5.0

# How long a worker stopped for overrunning --timeout (or one whose parent died)
# gets between SIGTERM and SIGKILL: a worker in Python code or a blocking system
# call unwinds (removing its temporary file) in milliseconds, plus numba's ~0.25 s
# tear-down; one stuck in compiled code never sees SIGTERM, so waiting longer buys nothing.
BATCH_KILL_GRACE_SECONDS = 1.0

# How often a worker checks that its parent is alive (where the kernel does not
# tell it, PR_SET_PDEATHSIG, Linux only): an orphan ends within this; a sleeping
# thread waking twice a second costs nothing measurable.
BATCH_PARENT_POLL_SECONDS = 0.5

# Files the local pool asks the kernel to read ahead, per worker, beyond those
# handed out: one each is enough for a decode to find its file in the page cache.
BATCH_PREFETCH_PER_WORKER = 1

# Dask tasks kept submitted per worker thread of the cluster: two keep every
# thread busy while results travel back, without queueing the whole batch on
# the scheduler (which a Ctrl-C would then have to cancel).
BATCH_DASK_TASKS_PER_SLOT = 2
