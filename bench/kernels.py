"""Kernel benchmark: imgconv.convolve against its peers, in one process, interleaved.

For each image and kernel case every contender runs once per round, in turn, for
several rounds; the table reports medians and the ratio imgconv / peer (below 1:
imgconv is faster).  Everything runs at 1 and at 2 threads (numba.set_num_threads,
cv2.setNumThreads; scipy and Pillow are single-threaded).

    python bench/kernels.py                  # full run, markdown table on stdout
    python bench/kernels.py --size 1024      # quicker
    python bench/kernels.py --cases 3x3,31x31 --threads 1
    python bench/kernels.py --peers memcpy,cv2   # only these contenders (name prefixes)

Beside memcpy (a copy into an array made once) imgconv is also timed into an array made
once (``output=``): the row marked ``output=``.

Needs: pip install '.[bench]' (opencv-python-headless, scipy).
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
    g = gaussian_1d(2.0, 6)  # 13 taps, as cv2.GaussianBlur(ksize=13, sigma=2)
    return {
        "3x3": rng.normal(size=(3, 3)),
        "5x5": rng.normal(size=(5, 5)),
        "gauss13": np.outer(g, g),
        "31x31": rng.normal(size=(31, 31)),
    }


def contenders(case, kernel, image, slow_ok):
    """name -> zero-argument callable, for one case."""
    import cv2
    from scipy import ndimage

    import imgconv

    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)  # cv2 correlates
    depth = cv2.CV_32F
    out = {
        "imgconv": lambda: imgconv.convolve(image, kernel, mode="reflect"),
        # Into an array made once, as the memcpy writes one (a new 64 MB array costs its
        # page faults on every call: 3-4 ms at 4096 x 4096 float32, most of a memcpy).
        "imgconv output=": lambda: imgconv.convolve(image, kernel, mode="reflect", output=frame),
        "memcpy": lambda: np.copyto(scratch, image),
    }
    scratch = np.empty_like(image)
    frame = np.empty(image.shape, np.float32)
    if case == "gauss13":
        g = gaussian_1d(2.0, 6).astype(np.float32)
        out["cv2.sepFilter2D"] = lambda: cv2.sepFilter2D(image, depth, g, g, borderType=cv2.BORDER_REFLECT)
        if image.dtype == np.float32:
            out["cv2.GaussianBlur"] = lambda: cv2.GaussianBlur(image, (13, 13), 2.0, borderType=cv2.BORDER_REFLECT)
        else:
            # GaussianBlur keeps the input depth: time it on a float32 copy made outside the clock.
            as_float = image.astype(np.float32)
            out["cv2.GaussianBlur"] = lambda: cv2.GaussianBlur(as_float, (13, 13), 2.0, borderType=cv2.BORDER_REFLECT)
    out["cv2.filter2D"] = lambda: cv2.filter2D(image, depth, flipped, borderType=cv2.BORDER_REFLECT)
    if slow_ok or kernel.size <= 25:
        out["scipy.ndimage"] = lambda: (
            ndimage.convolve(image, kernel.astype(np.float32), mode="reflect")
            if image.ndim == 2
            else ndimage.convolve(image.astype(np.float32), kernel[:, :, None].astype(np.float32), mode="reflect")
        )
    if image.dtype == np.uint8 and kernel.shape in ((3, 3), (5, 5)):
        from PIL import Image, ImageFilter

        pil = Image.fromarray(image)
        pil_kernel = ImageFilter.Kernel(kernel.shape, flipped.ravel().tolist(), scale=1)
        out["Pillow Kernel"] = lambda: pil.filter(pil_kernel)
    if image.dtype == np.uint8 and case == "gauss13":
        from PIL import Image, ImageFilter

        pil = Image.fromarray(image)
        out["Pillow GaussianBlur"] = lambda: pil.filter(ImageFilter.GaussianBlur(2.0))
    return out


def measure(funcs, rounds):
    times = {name: [] for name in funcs}
    for f in funcs.values():  # warm up (and compile)
        f()
    for _ in range(rounds):
        for name, f in funcs.items():
            # Let the previous contender's thread pool (OpenMP's, OpenCV's) stop
            # spinning, so that on 2 cores it does not steal time from this one.
            time.sleep(0.05)
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--cases", default="3x3,5x5,gauss13,31x31")
    parser.add_argument("--images", default="gray-f32,rgb-u8")
    parser.add_argument("--slow", action="store_true", help="also time scipy on 31x31 (about 13 s a call)")
    parser.add_argument("--peers", default="", help="only the peers whose names start with one of these (comma-separated)")
    args = parser.parse_args(argv)

    import cv2
    import numba

    import imgconv
    from imgconv.engine.plan import make_plan

    rng = np.random.default_rng(0)
    images = {
        "gray-f32": rng.random((args.size, args.size), dtype=np.float32),
        "rgb-u8": rng.integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8),
    }
    cases = make_cases(rng)
    print(f"# imgconv {imgconv.__version__}, numba {numba.__version__}, opencv {cv2.__version__}, numpy {np.__version__}")
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, {args.size}x{args.size}")
    print()
    print("| image | kernel | threads | strategy | imgconv ms | peer | peer ms | imgconv/peer |")
    print("| --- | --- | --- | --- | ---: | --- | ---: | ---: |")
    for threads in [int(t) for t in args.threads.split(",")]:
        numba.set_num_threads(threads)
        cv2.setNumThreads(threads)
        for image_name in args.images.split(","):
            image = images[image_name]
            for case in args.cases.split(","):
                kernel = cases[case]
                plan = make_plan(kernel, image.shape)
                funcs = contenders(case, kernel, image, args.slow)
                if args.peers:
                    wanted = tuple(args.peers.split(","))
                    funcs = {name: f for name, f in funcs.items() if name.startswith("imgconv") or name.startswith(wanted)}
                if "memcpy" not in funcs:
                    funcs.pop("imgconv output=")
                results = measure(funcs, args.rounds)
                mine = results.pop("imgconv")
                into = results.pop("imgconv output=", None)
                for peer, ms in results.items():
                    print(
                        f"| {image_name} | {case} | {threads} | {plan.strategy} | {mine:.1f} | {peer} | {ms:.1f} | {mine / ms:.2f} |"
                    )
                    if peer == "memcpy":  # the same, both into an existing array
                        print(
                            f"| {image_name} | {case} | {threads} | {plan.strategy}, output= | {into:.1f} | {peer} | {ms:.1f} | {into / ms:.2f} |"
                        )
                sys.stdout.flush()


if __name__ == "__main__":
    main()
