"""Fit the planner's cost model (imgconv/plan.py) to this machine.

Times each strategy on one thread over a range of kernels and prints ns per
output pixel and channel, then least-squares constants for

    direct    = DIRECT_PIXEL_NS + DIRECT_TAP_NS * non-zero taps
    separable = 2 * DIRECT_PIXEL_NS + DIRECT_TAP_NS * (kh + kw)       (per rank)
    fft       = tiles x N^2 x TILE_NS[N]      (imgconv/tunables.py FFT_TILE_NS: ns per pixel of an N x N tile)

    python bench/calibrate.py [--size 2048]
"""

import argparse
import statistics
import time

import numpy as np


def timed(f, rounds=5):
    f()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        f()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()

    import numba

    import imgconv
    from imgconv import tunables
    from imgconv.engine import fft as fft_module

    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    image = rng.random((args.size, args.size), dtype=np.float32)
    pixels = image.size

    def ns(kernel, strategy):
        return timed(lambda: imgconv.convolve(image, kernel, strategy=strategy, threads=1)) / pixels * 1e9

    direct = [(k * k, ns(rng.normal(size=(k, k)), "direct")) for k in (1, 3, 5, 7, 9, 13, 17)]
    a = np.array([[1, taps] for taps, _ in direct], float)
    pixel_ns, tap_ns = np.linalg.lstsq(a, np.array([t for _, t in direct]), rcond=None)[0]
    print("direct: taps -> ns/px", [(taps, round(t, 2)) for taps, t in direct])
    print(f"  DIRECT_PIXEL_NS = {pixel_ns:.3f}  DIRECT_TAP_NS = {tap_ns:.4f}")

    separable = []
    for k in (5, 9, 13, 25, 49):
        g = rng.normal(size=k)
        separable.append((k, ns(np.outer(g, g), "separable")))
    print("separable: size -> ns/px (model)", [(k, round(t, 2), round(2 * pixel_ns + tap_ns * 2 * k, 2)) for k, t in separable])

    # One tile size at a time, on an image of 4 x 4 tiles, through the FFT route's own code.
    tile_ns = {}
    chooser = fft_module.tile_size
    kernel = rng.normal(size=(9, 9))
    try:
        for n in sorted(tunables.FFT_TILE_NS):
            side = 4 * (n - 8)
            tiles_image = rng.random((side, side), dtype=np.float32)
            fft_module.tile_size = lambda shape, kshape, n=n: n
            seconds = timed(lambda: imgconv.convolve(tiles_image, kernel, strategy="fft", threads=1))
            tile_ns[n] = round(seconds / (16 * n * n) * 1e9, 1)
    finally:
        fft_module.tile_size = chooser
    print("fft: ns per tile pixel by tile size N")
    print(f"  FFT_TILE_NS = {tile_ns}")

if __name__ == "__main__":
    main()
