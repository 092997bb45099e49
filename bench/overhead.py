"""What one call costs beyond its kernel: imgconv.convolve on a tiny image against
OpenCV's filter2D, each timed with warm caches and right after a large image went
through memory (as a call on a real image finds them).

The layers are timed apart, so a regression shows where it is: the compiled kernel
alone (its arguments prepared once), ``cpu.run_direct`` (the entry point: border maps,
tap tables), ``run.run`` (route, threads, where the kernel runs) and the whole
``imgconv.convolve`` (validation, plan).

    python bench/overhead.py [--rounds 40]

Needs: pip install '.[bench]' (opencv-python-headless).
"""

import argparse
import statistics
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)

    import cv2
    import numba

    import imgconv
    from imgconv.engine import cpu
    from imgconv.engine import run as engine_run
    from imgconv.engine.finish import FLOAT32
    from imgconv.engine.plan import make_plan

    numba.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    large = rng.random((2048, 2048), dtype=np.float32)
    scratch = np.empty_like(large)
    tiny = rng.random((8, 8), dtype=np.float32)
    kernel = rng.normal(size=(3, 3))
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], np.float32)
    plan = make_plan(kernel, tiny.shape)

    captured = {}
    compiled = cpu._direct_rows
    cpu._direct_rows = lambda *arguments: captured.setdefault("arguments", arguments) and compiled(*arguments)
    try:
        cpu.run_direct(plan, tiny, 1, "reflect", 0.0, FLOAT32, 1)
    finally:
        cpu._direct_rows = compiled
    arguments = captured["arguments"]

    layers = {
        "kernel alone": lambda: compiled(*arguments),
        "cpu.run_direct": lambda: cpu.run_direct(plan, tiny, 1, "reflect", 0.0, FLOAT32, 1),
        "engine.run.run": lambda: engine_run.run(plan, tiny, 1, mode="reflect", cval=0.0),
        "imgconv.convolve": lambda: imgconv.convolve(tiny, kernel, mode="reflect"),
        "cv2.filter2D": lambda: cv2.filter2D(tiny, cv2.CV_32F, flipped, borderType=cv2.BORDER_REFLECT),
    }
    print("| layer (8x8 float32, 3x3, 1 thread) | warm caches, us | after a 2048x2048 copy, us |")
    print("| --- | ---: | ---: |")
    for name, call in layers.items():
        call()
        warm, cold = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            call()
            warm.append(time.perf_counter() - start)
            np.copyto(scratch, large)  # 32 MB through the caches, as a large call leaves them
            np.copyto(scratch, large)
            start = time.perf_counter()
            call()
            cold.append(time.perf_counter() - start)
        print(f"| {name} | {statistics.median(warm) * 1e6:.0f} | {statistics.median(cold) * 1e6:.0f} |")


if __name__ == "__main__":
    main()
