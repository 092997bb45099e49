"""Fit the planner's cost model (imgconv/plan.py) to this machine.

Times each strategy on one thread over a range of kernels and prints ns per
output pixel and channel, then least-squares constants for

    direct    = DIRECT_PIXEL_NS + DIRECT_TAP_NS * non-zero taps
    separable = 2 * DIRECT_PIXEL_NS + DIRECT_TAP_NS * (kh + kw)       (per rank)
    fft       = FFT_PIXEL_NS + FFT_UNIT_NS * transform work per pixel

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
    from imgconv.fft import fft_cost_per_pixel

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

    fft = []
    for k in (9, 15, 21, 31, 45, 63):
        work = fft_cost_per_pixel(image.shape, (k, k))
        fft.append((work, ns(rng.normal(size=(k, k)), "fft"), k))
    a = np.array([[1, w] for w, _, _ in fft], float)
    fft_pixel, fft_unit = np.linalg.lstsq(a, np.array([t for _, t, _ in fft]), rcond=None)[0]
    print("fft: size -> (work/px, ns/px)", [(k, round(w, 1), round(t, 2)) for w, t, k in fft])
    print(f"  FFT_PIXEL_NS = {fft_pixel:.3f}  FFT_UNIT_NS = {fft_unit:.4f}")


if __name__ == "__main__":
    main()
