"""How many output rows one sweep of the CPU kernels should compute (engine/cpu.py, ROWS_PER_SWEEP).

A sweep computes R output rows from the source rows they share, every source element
loaded once for all R (``cpu._sum_expression`` gives the order of each row's sum, as in
the kernels).  This times such sweeps, generated alone for R = 1 to 4, over a float32
image read in place on one thread: dense 3x3 and 5x5 kernels and one-column kernels of
9 to 25 taps (the separable column pass).  The kernels' own sweeps split a kernel's taps
as ``cpu._sweeps`` does, so the loads of a sweep fit the registers.

    python bench/sweep_rows.py [--size 2048] [--rounds 11]
"""

import argparse
import statistics
import time

import numpy as np


def sweep_function(rows, side, cols):
    """A compiled driver: ``rows`` output rows a sweep of a dense ``side`` x ``cols`` kernel."""
    from numba import njit

    from imgconv.engine import cpu

    count = side * cols
    body = ["def sweep(outs, src, i, w, n):"]
    body += [f"    o{r} = outs[i + {r}, 1:1 + n]" for r in range(rows)]
    for first, last in cpu._sweeps(count):
        used = sorted({(t // cols + d, t % cols) for t in range(first, last) for d in range(rows)})
        body += [f"    x{u}_{v} = src[i + {u}, {v}:{v} + n]" for u, v in used]
        body += [f"    w{t} = w[{t}]" for t in range(first, last)]
        body.append("    for j in range(n):")
        body += [f"        a{u}_{v} = x{u}_{v}[j]" for u, v in used]
        for r in range(rows):
            terms = [f"w{t} * a{t // cols + r}_{t % cols}" for t in range(first, last)]
            body.append(f"        o{r}[j] = {cpu._sum_expression(terms, f'o{r}[j]' if first else None)}")
    namespace = {}
    exec("\n".join(body), {}, namespace)  # noqa: S102 - our own template
    sweep = njit(namespace["sweep"])

    @njit
    def drive(src, out, w):
        height, n = src.shape[0] - side, src.shape[1] - cols
        i = 0
        while i + rows <= height:
            sweep(out, src, i, w, n)
            i += rows

    return drive


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()

    import numba

    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"# {args.size} x {args.size} float32, one thread, ms (median of {args.rounds}); R = output rows a sweep")
    print("| kernel | R = 1 | R = 2 | R = 3 | R = 4 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for side, cols in ((3, 3), (5, 5), (9, 1), (13, 1), (17, 1), (25, 1)):
        src = rng.random((args.size + side, args.size + cols), dtype=np.float32)
        out = np.empty_like(src)
        weights = rng.random(side * cols).astype(np.float32)
        drivers = {rows: sweep_function(rows, side, cols) for rows in (1, 2, 3, 4)}
        for drive in drivers.values():
            drive(src, out, weights)  # compile
        times = {rows: [] for rows in drivers}
        for _ in range(args.rounds):
            for rows, drive in drivers.items():
                start = time.perf_counter()
                drive(src, out, weights)
                times[rows].append(time.perf_counter() - start)
        cells = " | ".join(f"{statistics.median(times[rows]) * 1e3:.2f}" for rows in drivers)
        print(f"| {side}x{cols} | {cells} |")


if __name__ == "__main__":
    main()
