"""GPU benchmark: imgconv's CUDA kernels against the device's copy bandwidth and CuPy.

Times, on one float32 image already on the GPU (8192 x 8192 by default), the
kernel alone (CUDA events around repeated launches, after a warm-up that
compiles) for the cases of docs/performance.md: 3x3 and 5x5 (direct), a 13-tap
Gaussian (separable: two passes) and 31x31 (direct).  In the same run it times a
device-to-device copy of the image, so each case's achieved bandwidth (bytes read
and written by its passes per second) is given as a fraction of the copy's.
Where CuPy is importable the same cases run through
``cupyx.scipy.ndimage.convolve`` (and the Gaussian also as two
``convolve1d`` passes), and the results are checked against imgconv's.

    python bench/gpu.py                         # the table for docs/performance.md
    python bench/gpu.py --size 4096 --repeat 50
    python bench/gpu.py --block 32x16           # another block shape (imgconv.tunables.CUDA_BLOCK)
    python bench/gpu.py --threshold             # also end to end, cuda against cpu, by image size:
                                                # the crossover for plan.CUDA_AUTO_MIN_VALUES

Needs a CUDA GPU and ``pip install '.[cuda12]'`` (or ``.[cuda13]``), plus CuPy for
the comparison (``pip install cupy-cuda12x``).  Under NUMBA_ENABLE_CUDASIM=1 it runs
(tiny sizes only) to check the script itself; its times are then meaningless.
"""

import argparse
import platform
import statistics
import sys
import time

import numpy as np


def gaussian_1d(sigma, radius):
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def make_cases(rng):
    """name -> (kernel, strategy, factors or None)"""
    g = gaussian_1d(2.0, 6)  # 13 taps
    return {
        "3x3": (rng.normal(size=(3, 3)), "direct", None),
        "5x5": (rng.normal(size=(5, 5)), "direct", None),
        "gauss13": (np.outer(g, g), "separable", [(g, g)]),
        "31x31": (rng.normal(size=(31, 31)), "direct", None),
    }


class Timer:
    """Milliseconds per call of ``run`` on ``stream``: CUDA events, or the wall clock in the simulator."""

    def __init__(self, cuda, stream, simulator):
        self.cuda, self.stream, self.simulator = cuda, stream, simulator

    def __call__(self, run, repeat):
        run()  # warm-up: compiles, allocates
        self.stream.synchronize()
        if self.simulator:
            start = time.perf_counter()
            for _ in range(repeat):
                run()
            self.stream.synchronize()
            return (time.perf_counter() - start) * 1e3 / repeat
        begin, end = self.cuda.event(), self.cuda.event()
        begin.record(self.stream)
        for _ in range(repeat):
            run()
        end.record(self.stream)
        end.synchronize()
        return begin.elapsed_time(end) / repeat


def cupy_module():
    try:
        import cupy
        import cupyx.scipy.ndimage
    except Exception as exc:  # noqa: BLE001 - any reason CuPy cannot run is reported, not raised
        return None, f"CuPy not available ({type(exc).__name__}: {exc})"
    return (cupy, cupyx.scipy.ndimage), None


def time_cupy(cupy_mods, image_dev, kernel, case, repeat):
    """name -> (ms, result as numpy) for the CuPy contenders of a case."""
    cupy, ndimage = cupy_mods
    x = cupy.asarray(image_dev)  # shares the device memory (CUDA array interface)
    k = cupy.asarray(kernel.astype(np.float32))
    out = cupy.empty_like(x)
    runs = {"cupyx convolve": lambda: ndimage.convolve(x, k, output=out, mode="reflect")}
    if case == "gauss13":
        g = cupy.asarray(gaussian_1d(2.0, 6).astype(np.float32))
        tmp = cupy.empty_like(x)

        def two_passes():
            ndimage.convolve1d(x, g, axis=1, output=tmp, mode="reflect")
            ndimage.convolve1d(tmp, g, axis=0, output=out, mode="reflect")

        runs["cupyx convolve1d x2"] = two_passes
    results = {}
    for name, run in runs.items():
        run()
        cupy.cuda.Device().synchronize()
        begin, end = cupy.cuda.Event(), cupy.cuda.Event()
        begin.record()
        for _ in range(repeat):
            run()
        end.record()
        end.synchronize()
        results[name] = (cupy.cuda.get_elapsed_time(begin, end) / repeat, cupy.asnumpy(out))
    return results


def kernel_table(args, cuda, gpu, simulator):
    from imgconv.engine.plan import make_plan

    rng = np.random.default_rng(0)
    size = args.size
    host = rng.random((size, size), dtype=np.float32)
    stream = cuda.stream()
    timer = Timer(cuda, stream, simulator)
    src = cuda.to_device(host, stream=stream)
    out = cuda.device_array_like(src, stream=stream)
    copy_ms = timer(lambda: out.copy_to_device(src, stream=stream), args.repeat)
    nbytes = host.nbytes
    copy_gbs = 2 * nbytes / copy_ms / 1e6  # read + write
    cupy_mods, cupy_note = cupy_module()
    cases = make_cases(rng)
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    rows = []
    for case in wanted:
        kernel, strategy, factors = cases[case]
        plan = make_plan(kernel, host.shape, backend="cuda", strategy=strategy, factors=factors)
        passes = 2 * len(plan.factors) if plan.strategy == "separable" else 1

        def run(kernel=kernel, plan=plan):
            gpu.convolve_device(src, out, size, 1, plan, "reflect", 0.0, stream=stream)

        ms = timer(run, args.repeat)
        ours = out.copy_to_host(stream=stream)
        stream.synchronize()
        gbs = passes * 2 * nbytes / ms / 1e6
        row = {"case": case, "strategy": plan.strategy, "ms": ms, "gbs": gbs, "of_copy": gbs / copy_gbs, "peers": {}}
        if cupy_mods is not None:
            for name, (peer_ms, theirs) in time_cupy(cupy_mods, src, kernel, case, args.repeat).items():
                err = float(np.max(np.abs(theirs - ours)) / max(1e-30, float(np.max(np.abs(ours)))))
                row["peers"][name] = (peer_ms, err)
        rows.append(row)
    return copy_ms, copy_gbs, rows, cupy_note


def threshold_table(args, simulator):
    """End to end (upload, kernel, download) on cuda against cpu, for an RGB uint8 image and a 5x5."""
    import imgconv

    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(5, 5))
    sizes = [16, 24] if simulator else [256, 512, 1024, 1448, 2048, 2896, 4096]
    rows = []
    for side in sizes:
        image = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        times = {}
        for backend in ("cpu", "cuda"):
            imgconv.convolve(image, kernel, backend=backend, strategy="direct")  # warm-up
            samples = []
            for _ in range(1 if simulator else 7):
                start = time.perf_counter()
                imgconv.convolve(image, kernel, backend=backend, strategy="direct")
                samples.append(time.perf_counter() - start)
            times[backend] = statistics.median(samples) * 1e3
        rows.append((side, side * side * 3, times["cpu"], times["cuda"]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="image side (default 8192)")
    parser.add_argument("--repeat", type=int, default=20, help="timed launches per case")
    parser.add_argument("--cases", default="3x3,5x5,gauss13,31x31")
    parser.add_argument("--block", default=None, help="threads per block, XxY (default: imgconv.tunables.CUDA_BLOCK)")
    parser.add_argument("--threshold", action="store_true", help="also time end to end, cuda against cpu, by size")
    args = parser.parse_args(argv)

    from imgconv.engine.plan import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is not None:
        print(f"bench/gpu.py: no CUDA device: {reason}", file=sys.stderr)
        return 1
    from numba import cuda

    from imgconv import tunables
    from imgconv.engine import cuda as gpu

    simulator = gpu.SIMULATOR
    if args.block:
        tunables.CUDA_BLOCK = tuple(int(n) for n in args.block.lower().split("x"))
    if simulator and args.size > 64:
        print("bench/gpu.py: under the simulator only --size 64 or less is practical", file=sys.stderr)
        return 1

    import numba_cuda

    device = cuda.get_current_device()
    name = "simulator" if simulator else device.name.decode() if isinstance(device.name, bytes) else device.name
    print(f"# imgconv GPU benchmark: {name}, {args.size}x{args.size} float32, block {tunables.CUDA_BLOCK}")
    print(f"numba-cuda {numba_cuda.__version__}, Python {platform.python_version()}, {platform.machine()}")
    if simulator:
        print("(NUMBA_ENABLE_CUDASIM: a check of the script; the times mean nothing)")
    copy_ms, copy_gbs, rows, cupy_note = kernel_table(args, cuda, gpu, simulator)
    print()
    print(f"device-to-device copy: {copy_ms:.3f} ms, {copy_gbs:.0f} GB/s (read + write)")
    if cupy_note:
        print(cupy_note)
    print()
    peers = sorted({name for row in rows for name in row["peers"]})
    header = ["case", "strategy", "imgconv ms", "GB/s", "of copy"] + [f"{p} ms" for p in peers] + [f"imgconv / {p}" for p in peers]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        cells = [row["case"], row["strategy"], f"{row['ms']:.3f}", f"{row['gbs']:.0f}", f"{row['of_copy']:.0%}"]
        cells += [f"{row['peers'][p][0]:.3f}" if p in row["peers"] else "-" for p in peers]
        cells += [f"{row['ms'] / row['peers'][p][0]:.2f}" if p in row["peers"] else "-" for p in peers]
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        for p, (_, err) in row["peers"].items():
            if err > 1e-4:
                print(f"warning: {row['case']}: imgconv and {p} differ by {err:.2e} (relative to the largest value)")
    if args.threshold:
        print()
        print("end to end, RGB uint8, 5x5 direct (upload, kernel, download against the CPU backend):")
        print()
        print("| side | values | cpu ms | cuda ms | cuda / cpu |")
        print("| --- | --- | --- | --- | --- |")
        for side, values, cpu_ms, cuda_ms in threshold_table(args, simulator):
            print(f"| {side} | {values} | {cpu_ms:.2f} | {cuda_ms:.2f} | {cuda_ms / cpu_ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
