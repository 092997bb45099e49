"""Fit the planner's cost model (imgconv/engine/plan.py) to this machine.

The fit goes in imgconv/tunables.py's CPU_COST_FITS, under this machine's kind of CPU
(printed first: tunables.CPU_COST_FIT, "avx512-amd", "avx512-intel" or "avx2"); the
planner takes the fit of the kind it runs on.

Times each strategy on one thread over a range of kernels and prints ns per
output pixel and channel, then constants for

    direct    = DIRECT_PIXEL_NS + DIRECT_TAP_NS * non-zero taps        (taps held in registers)
              = DIRECT_PIXEL_NS + DIRECT_GROUP_TAP_NS * non-zero taps  (the others)
    separable = SEPARABLE_PIXEL_NS + the kh + kw taps of its passes     (per rank; each
                costed as in direct, by whether its sweeps hold them in registers)
                + PASS_SUM_NS per rank beyond the first
    fft       = tiles x N^2 x TILE_NS[N]      (imgconv/tunables.py FFT_TILE_NS: ns per pixel of an N x N tile)

The direct costs are fitted to relative error (each size counts alike: the 3x3 and the
17x17 both decide strategies), one fixed cost and a tap cost for each kind of sweep
(engine/sweeps.py: dense 3x3 and 5x5 kernels hold their taps in registers, 7x7 and up
are summed four taps a sweep, at 4x the cost a tap on the Intel host).  The separable
one's fixed cost (both passes and the ring of row results), beside its passes' taps, to
relative error, over the sizes where it meets direct (3x3 to 7x7: beyond, direct is
several times dearer whatever the fit).  Then the crossovers are checked: with the
fitted constants, the planner's choice against the faster measured strategy for rank-1
kernels (direct or separable) and dense ones (direct or FFT).

    python bench/calibrate.py [--size 2048] [--rounds 5]
"""

import argparse
import statistics
import time

import numpy as np


def timed(f, rounds):
    f()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        f()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--check-threads", type=int, default=None, metavar="N",
        help="only check the crossovers, on N threads, with the stored constants (the model is one thread's)",
    )
    args = parser.parse_args()

    import numba

    import imgconv
    from imgconv import tunables
    from imgconv.engine import fft as fft_module
    from imgconv.engine import plan as planner
    from imgconv.engine.sweeps import in_registers

    numba.set_num_threads(1)
    print(f"this CPU's fit: CPU_COST_FITS[{tunables.CPU_COST_FIT!r}]")
    rng = np.random.default_rng(0)
    image = rng.random((args.size, args.size), dtype=np.float32)
    pixels = image.size

    def ns(kernel, strategy, threads=1):
        return timed(lambda: imgconv.convolve(image, kernel, strategy=strategy, threads=threads), args.rounds) / pixels * 1e9

    if args.check_threads:
        numba.set_num_threads(args.check_threads)
        check_crossovers(rng, image, lambda kernel, strategy: ns(kernel, strategy, args.check_threads), planner)
        return

    # Dense squares, and 1-D kernels whose taps are also held in registers (one row of a
    # fused count, one column of a paired one): with the two dense sizes alone the
    # registers' tap cost rested on two points, and one noisy run gave it 30x the others'.
    shapes = [(k, k) for k in (1, 3, 5, 7, 9, 13, 17)] + [(1, 13), (13, 1), (1, 17), (25, 1)]
    direct = [(shape, ns(rng.normal(size=shape), "direct")) for shape in shapes]
    taps = np.array([h * w for (h, w), _ in direct], float)
    measured = np.array([t for _, t in direct])
    held = np.array([in_registers((h, w), h * w) for h, w in shapes])
    # One fixed cost, one tap cost for each kind of sweep; relative error.
    a = np.stack([np.ones_like(taps), np.where(held, taps, 0), np.where(held, 0, taps)], axis=1) / measured[:, None]
    pixel_ns, tap_ns, group_tap_ns = np.linalg.lstsq(a, np.ones_like(measured), rcond=None)[0]
    model = pixel_ns + np.where(held, tap_ns, group_tap_ns) * taps
    print("direct: shape -> ns/px (model)", [(f"{h}x{w}", round(m, 2), round(float(e), 2)) for ((h, w), m), e in zip(direct, model)])
    print(f"  DIRECT_PIXEL_NS = {pixel_ns:.3f}  DIRECT_TAP_NS = {tap_ns:.4f}  DIRECT_GROUP_TAP_NS = {group_tap_ns:.4f}")

    separable = []
    for k in (3, 5, 7, 9, 13, 17, 25, 49):
        g = rng.normal(size=k)
        separable.append((k, ns(np.outer(g, g), "separable")))
    near = [(k, t) for k, t in separable if k <= 7]

    def pass_taps_ns(k):  # both passes' taps, as engine/plan.py's separable_cost costs them
        return sum(k * (tap_ns if in_registers(shape, k) else group_tap_ns) for shape in ((k, 1), (1, k)))

    # The least-squares intercept c of (c + pass_taps_ns(k) - t) / t.
    separable_ns = sum((t - pass_taps_ns(k)) / t**2 for k, t in near) / sum(1 / t**2 for _, t in near)
    print("separable: size -> ns/px (model)", [(k, round(t, 2), round(separable_ns + pass_taps_ns(k), 2)) for k, t in separable])
    print(f"  SEPARABLE_PIXEL_NS = {separable_ns:.3f}")

    # A second separable pair's result added to the first: the float32 sum over the image.
    total, part = np.empty_like(image), np.empty_like(image)
    pass_sum_ns = timed(lambda: np.add(total, part, out=total), args.rounds) / pixels * 1e9
    print(f"  PASS_SUM_NS = {pass_sum_ns:.2f}")

    # One tile size at a time, on an image of 4 x 4 tiles, through the FFT route's own code.
    # The sizes interleaved round by round and timed in process CPU time (one thread: the
    # worker's), so a neighbour's load on a shared machine shifts no size against another.
    chooser = fft_module.tile_size
    kernel = rng.normal(size=(9, 9))
    sizes = sorted(tunables.FFT_TILE_NS)
    tiles_images = {n: rng.random((4 * (n - 8), 4 * (n - 8)), dtype=np.float32) for n in sizes}
    samples = {n: [] for n in sizes}
    try:
        for round_ in range(args.rounds + 1):
            for n in sizes:
                fft_module.tile_size = lambda shape, kshape, n=n: n
                start = time.process_time()
                imgconv.convolve(tiles_images[n], kernel, strategy="fft", threads=1)
                if round_:  # the first round warms up
                    samples[n].append(time.process_time() - start)
    finally:
        fft_module.tile_size = chooser
    tile_ns = {n: round(statistics.median(samples[n]) / (16 * n * n) * 1e9, 1) for n in sizes}
    print("fft: ns per tile pixel by tile size N")
    print(f"  FFT_TILE_NS = {tile_ns}")

    # The crossovers, planned with the constants just fitted (the memo cleared before and after).
    fitted = dict(DIRECT_PIXEL_NS=pixel_ns, DIRECT_TAP_NS=tap_ns, DIRECT_GROUP_TAP_NS=group_tap_ns, SEPARABLE_PIXEL_NS=separable_ns, PASS_SUM_NS=pass_sum_ns, FFT_TILE_NS=tile_ns)
    saved = {name: getattr(tunables, name) for name in fitted}
    try:
        for name, value in fitted.items():
            setattr(tunables, name, value)
        planner._plan_memo.clear()
        check_crossovers(rng, image, ns, planner)
    finally:
        for name, value in saved.items():
            setattr(tunables, name, value)
        planner._plan_memo.clear()


def check_crossovers(rng, image, ns, planner):
    """The planner's choice against the faster measured strategy (``ns(kernel, strategy)``)."""
    print("crossovers: kernel -> measured ns/px by strategy, the faster, the planner's choice")
    for k in (3, 5, 7, 9):
        g = rng.normal(size=k)
        kernel = np.outer(g, g)
        times = {s: round(ns(kernel, s), 2) for s in ("direct", "separable")}
        chosen = planner.make_plan(kernel, image.shape).strategy
        print(f"  rank 1 {k}x{k}: {times}, faster {min(times, key=times.get)}, planned {chosen}")
    for k in (7, 9, 11, 13, 15, 17, 21):
        kernel = rng.normal(size=(k, k))
        times = {s: round(ns(kernel, s), 2) for s in ("direct", "fft")}
        chosen = planner.make_plan(kernel, image.shape).strategy
        print(f"  dense {k}x{k}: {times}, faster {min(times, key=times.get)}, planned {chosen}")


if __name__ == "__main__":
    main()
