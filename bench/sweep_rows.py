"""How many output rows one sweep of the CPU kernels should compute (engine/cpu.py, ROWS_PER_SWEEP).

A sweep computes R output rows from the source rows they share, every source element
loaded once for all R.  This times the kernels' own generated sweeps (``cpu._rows_source``,
taps split as ``cpu._sweeps`` splits them) for R = 1 to 4, over a float32 image read in
place on one thread: dense 3x3 and 5x5 kernels and one-column kernels of 9 to 25 taps
(the separable column pass).

    python bench/sweep_rows.py [--size 2048] [--rounds 11] [--pause 0.05]

``--pause``: seconds of sleep before each call, as bench/kernels.py waits between its
contenders (the image then comes from memory, not the caches); a memcpy of the image is
timed beside the sweeps.
"""

import argparse
import statistics
import time

import numpy as np


def sweep_function(rows, side, cols):
    """A compiled driver over a whole image: ``rows`` output rows a sweep of a dense
    ``side`` x ``cols`` kernel, each sweep the kernels' own generated one
    (``cpu._rows_source``)."""
    from numba import njit

    from imgconv.engine import cpu

    namespace = {}
    exec(cpu._rows_source("sweep", side * cols, cols, rows), {}, namespace)  # noqa: S102 - the engine's template
    sweep = njit(namespace["sweep"])

    @njit
    def drive(src, out, weights, offsets, source_rows):
        height, n = src.shape[0] - side + 1, src.shape[1] - cols + 1
        i = 0
        while i + rows <= height:
            for u in range(side + rows - 1):
                source_rows[u] = i + u
            sweep(out[i : i + rows], 0, src, source_rows, offsets, weights, 0, n)
            i += rows

    return drive


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()

    import numba

    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"# {args.size} x {args.size} float32, one thread, ms (median of {args.rounds}); R = output rows a sweep")
    print(f"# {args.pause} s before each call")
    print("| kernel | R = 1 | R = 2 | R = 3 | R = 4 | memcpy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for side, cols in ((3, 3), (5, 5), (9, 1), (13, 1), (17, 1), (25, 1)):
        src = rng.random((args.size + side, args.size + cols), dtype=np.float32)
        out = np.empty_like(src)
        weights = rng.random(side * cols).astype(np.float32)
        offsets = np.arange(cols, dtype=np.int64)
        source_rows = np.empty(side + 4, np.int64)
        drivers = {rows: sweep_function(rows, side, cols) for rows in (1, 2, 3, 4)}
        drivers["memcpy"] = lambda src, out, *rest: np.copyto(out, src)
        for drive in drivers.values():
            drive(src, out, weights, offsets, source_rows)  # compile
        times = {rows: [] for rows in drivers}
        for _ in range(args.rounds):
            for rows, drive in drivers.items():
                if args.pause:
                    time.sleep(args.pause)
                start = time.perf_counter()
                drive(src, out, weights, offsets, source_rows)
                times[rows].append(time.perf_counter() - start)
        cells = " | ".join(f"{statistics.median(times[rows]) * 1e3:.2f}" for rows in drivers)
        print(f"| {side}x{cols} | {cells} |")


if __name__ == "__main__":
    main()
