"""Why the CPU kernels' ring buffers have rows of ``cpu._ring_row(width)`` elements.

The separable column pass sums R output rows a sweep from the ``13 + R - 1`` ring rows
they share (engine/cpu.py).  When a ring row is a multiple of 4 KB long (a 2048-pixel
RGB row of float32 is 24 KB), one column of every ring row lands in one L1 cache set,
and a sweep reads more rows than the set has ways.  This times the kernels' own
generated 13-tap sweep (``cpu._rows_source``) over a ring whose rows are exactly
``width`` long, and over one whose rows are ``cpu._ring_row(width)`` long, on one thread,
for every R; each cell is the time to produce ``--height`` output rows.

    python bench/ring_rows.py [--width 6144] [--height 2048] [--rounds 7]
"""

import argparse
import statistics
import time

import numpy as np

TAPS = 13


def ring_driver(rows, tile):
    """A compiled loop of ``rows``-row sweeps over a ring of ``TAPS + rows - 1`` slots."""
    from numba import njit

    from imgconv.engine import cpu

    namespace = {}
    exec(cpu._rows_source("sweep", TAPS, 1, rows), {}, namespace)  # noqa: S102 - the engine's template
    sweep = njit(namespace["sweep"])
    slots = TAPS + rows - 1

    @njit
    def drive(sweeps, ring, out, weights, offsets):
        source_rows = np.empty(slots, np.int64)
        width = out.shape[1]
        for k in range(sweeps):
            for u in range(slots):
                source_rows[u] = (k * rows + u) % ring.shape[0]
            for j0 in range(0, width, tile):
                n = min(width, j0 + tile) - j0
                sweep(out, j0, ring, source_rows, offsets, weights, j0, n)

    return drive


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=6144, help="elements a row (6144: 2048 RGB pixels)")
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import numba

    from imgconv import tunables
    from imgconv.engine import cpu

    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    weights = rng.random(TAPS).astype(np.float32)
    offsets = np.zeros(TAPS, np.int64)
    lengths = {"rows of exactly the width": args.width, f"rows of cpu._ring_row ({cpu._ring_row(args.width)})": cpu._ring_row(args.width)}
    print(f"# {TAPS}-tap column pass, {args.width} elements a row, {args.height} output rows, one thread, ms (median of {args.rounds})")
    print("| ring | R = 1 | R = 2 | R = 3 | R = 4 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    drivers = {rows: ring_driver(rows, tunables.CPU_COLUMN_TILE) for rows in (1, 2, 3, 4)}
    for name, length in lengths.items():
        ring = rng.random((TAPS + 3, length)).astype(np.float32)
        cells = []
        for rows, drive in drivers.items():
            out = np.empty((rows, args.width), np.float32)
            drive(1, ring, out, weights, offsets)  # compile
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                drive(args.height // rows, ring, out, weights, offsets)
                times.append(time.perf_counter() - start)
            cells.append(f"{statistics.median(times) * 1e3:.2f}")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
