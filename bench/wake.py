"""A parallel call after an idle pause, on each of numba's threading layers, against OpenCV.

Like bench/kernels.py, every call follows a pause (50 ms) in which the thread pools go
to sleep; here each call's time is printed, so that the slow wakes show, and each
layer runs in its own process (numba picks its layer once per process):

    python bench/wake.py                       # tbb and omp, 2 threads, 2048 x 2048 float32 3x3
    python bench/wake.py --layers tbb,omp,workqueue --threads 1,2 --size 4096 --kernel 5

Needs: pip install '.[bench]' (opencv-python-headless).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time


def one_layer(size, threads, kernel_size, rounds, pause):
    import cv2
    import numba
    import numpy as np

    import imgconv

    numba.set_num_threads(threads)
    cv2.setNumThreads(threads)
    rng = np.random.default_rng(0)
    image = rng.random((size, size), dtype=np.float32)
    kernel = rng.normal(size=(kernel_size, kernel_size))
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)  # cv2 correlates
    calls = {
        "imgconv": lambda: imgconv.convolve(image, kernel, mode="reflect"),
        "cv2.filter2D": lambda: cv2.filter2D(image, cv2.CV_32F, flipped, borderType=cv2.BORDER_REFLECT),
    }
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            time.sleep(pause)
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    layer = numba.threading_layer()
    for name, values in times.items():
        each = " ".join(f"{v:.1f}" for v in values)
        print(f"| {layer} | {threads} | {name} | {statistics.median(values):.2f} | {max(values):.2f} | {each} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="tbb,omp")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--kernel", type=int, default=3, help="a dense random kernel this many taps square")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds before each call")
    parser.add_argument("--one", type=int, metavar="THREADS", help=argparse.SUPPRESS)  # (the layer: from the environment)
    args = parser.parse_args(argv)
    if args.one:
        one_layer(args.size, args.one, args.kernel, args.rounds, args.pause)
        return
    print(f"# {args.size}x{args.size} float32, dense {args.kernel}x{args.kernel}, {args.pause * 1e3:.0f} ms before each call")
    print()
    print("| layer | threads | contender | median ms | worst ms | each call, ms |")
    print("| --- | ---: | --- | ---: | ---: | --- |")
    sys.stdout.flush()
    for threads in args.threads.split(","):
        for layer in args.layers.split(","):
            env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
            command = [sys.executable, __file__, "--one", threads, "--size", str(args.size), "--kernel", str(args.kernel), "--rounds", str(args.rounds), "--pause", str(args.pause)]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"| {layer} | {threads} | (not available: {reason}) | | | |")
            else:
                print(done.stdout, end="")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
