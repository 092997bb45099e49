"""How should ``imgconv batch`` use the cores: worker processes, worker threads, or numba's threads?

Filters the photographs of ``bench/batch.py`` (generated there, same folder)
three ways, each in a fresh Python process, timed from its start to its end:

- ``processes``: ``imgconv batch --jobs 2`` — 2 spawned worker processes,
  each filtering whole files with 1 numba thread (what imgconv does);
- ``threads``: one process, a ``ThreadPoolExecutor`` of 2 threads, each
  filtering whole files with 1 numba thread (the kernels are ``nogil``);
- ``numba``: one process, one file at a time, numba on 2 threads (only the
  convolution is parallel; decoding and encoding are not).

Usage::

    python bench/batch_workers.py [--count 200] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batch as bench_batch  # noqa: E402  (bench/batch.py: the photographs)

REPO = Path(__file__).resolve().parent.parent

IN_PROCESS = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
from imgconv.batch import Job, plan_batch, process_one
from imgconv.chain import Chain
from imgconv.kernels import load_catalog
import numba

mode, in_dir, out_dir = sys.argv[1:4]
job = Job(Chain.of(load_catalog().resolve("gaussian", {"sigma": 2.0})))
tasks, _ = plan_batch(in_dir, out_dir)
if mode == "threads":
    with ThreadPoolExecutor(2, initializer=lambda: numba.set_num_threads(1)) as pool:
        results = list(pool.map(lambda t: process_one(job, t.source, t.destination), tasks))
else:
    numba.set_num_threads(2)
    results = [process_one(job, t.source, t.destination) for t in tasks]
assert all(r.status == "done" for r in results), [r.message for r in results if r.status != "done"][:3]
"""


def timed(argv, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed: {result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    data = Path(tempfile.gettempdir()) / f"imgconv-bench-batch-{args.count}"
    files = bench_batch.generate(data, args.count)
    total_mp = sum(pixels for _, pixels in files) / 1e6
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    commands = {
        "processes": lambda out: [sys.executable, "-m", "imgconv", "batch", "gaussian", "-p", "sigma=2", str(data), str(out), "-j", "2", "-q"],
        "threads": lambda out: [sys.executable, "-c", IN_PROCESS, "threads", str(data), str(out)],
        "numba": lambda out: [sys.executable, "-c", IN_PROCESS, "numba", str(data), str(out)],
    }
    timed(commands["numba"](Path(tempfile.mkdtemp())), env)  # warm the numba cache and the page cache
    best = {}
    for _ in range(args.repeat):
        for name, command in commands.items():  # interleaved, so a busy moment does not hit one mode only
            out = Path(tempfile.mkdtemp(prefix="imgconv-bench-workers-"))
            try:
                seconds, cpu = timed(command(out), env)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            load = os.getloadavg()[0]
            print(f"{name:<10} {seconds:6.1f} s  cpu {cpu:6.1f} s  (load {load:.1f})", file=sys.stderr)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, cpu)
    print(f"\n{len(files)} JPEGs, {total_mp:.0f} MP, Gaussian sigma 2, {os.cpu_count()} cores; best of {args.repeat}\n")
    print("| workers | seconds | images/s | MP/s | CPU seconds |\n| --- | ---: | ---: | ---: | ---: |")
    labels = {
        "processes": "2 processes x 1 numba thread (imgconv batch --jobs 2)",
        "threads": "2 threads x 1 numba thread, one process",
        "numba": "1 file at a time, 2 numba threads",
    }
    for name, (seconds, cpu) in best.items():
        print(f"| {labels[name]} | {seconds:.1f} | {len(files) / seconds:.2f} | {total_mp / seconds:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
