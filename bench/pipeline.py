"""Where the per-file path spends its time: ``pipeline.filter_file`` on one file, by phase.

Runs :func:`imgconv.pipeline.filter_file` several times in one process on a
12-megapixel JPEG (samples/rocket.jpg resized to 4240x2832, quality 95, as
bench/cli.py makes it) or on the files given, with timers wrapped around the
functions of :mod:`imgconv.io` and :mod:`imgconv.pipeline` that make up each
phase, and prints the median milliseconds of each:

- ``open``: ``Image.open`` (header, metadata parsing);
- ``decode``: Pillow's ``ImageFile.load`` (libjpeg / zlib into Pillow's image);
- ``to array``: from Pillow's image to the array the kernels read
  (``io._canonical_pixels``: the copy out of Pillow, and any conversion);
- ``read, other``: the rest of ``io.read_image`` (metadata, text, encoding settings);
- ``filter``: ``pipeline.filter_frames`` (the chain, the kernels);
- ``to image``: from the filtered array to what the encoder reads (``io._image_for``);
- ``encode``: the encoder writing into the temporary file, and the rename (``io._save_atomically``);
- ``write, other``: the rest of ``io.write_image`` (checks, save parameters, metadata);
- ``total``: the whole ``filter_file`` call.

Usage::

    python bench/pipeline.py                          # the 12 MP JPEG, gaussian sigma 2
    python bench/pipeline.py --runs 9 --filter sharpen
    python bench/pipeline.py photo.png scan.tif       # files of your own

The kernels are warmed first (a first call loads numba's cache, or compiles).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHASES = ("open", "decode", "to array", "read, other", "filter", "to image", "encode", "write, other", "total")


#: The clock: wall time, or with --cpu the process's CPU time (every thread's, system time
#: too: page faults are counted), steadier on a machine shared with other work.
clock = time.perf_counter


def _timed(owner, name, bucket, samples):
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        t0 = clock()
        try:
            return original(*args, **kwargs)
        finally:
            samples[bucket] += clock() - t0

    setattr(owner, name, wrapper)


def instrument():
    """Wrap the functions of each phase; returns the dict the timers add into."""
    from PIL import Image, ImageFile

    from imgconv import io, pipeline

    samples = defaultdict(float)
    _timed(Image, "open", "open", samples)
    _timed(ImageFile.ImageFile, "load", "decode", samples)
    _timed(io, "_canonical_pixels", "to array", samples)
    _timed(io, "read_image", "read", samples)
    _timed(pipeline, "filter_frames", "filter", samples)
    _timed(io, "_image_for", "to image", samples)
    _timed(io, "_save_atomically", "encode", samples)
    _timed(io, "write_image", "write", samples)
    return samples


def make_photo(folder: Path) -> Path:
    from PIL import Image

    source = folder / "photo.jpg"
    Image.open(REPO / "samples" / "rocket.jpg").convert("RGB").resize((4240, 2832), Image.LANCZOS).save(source, quality=95)
    return source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--filter", default="gaussian", help="a catalog filter (default gaussian)")
    parser.add_argument("-p", "--param", action="append", default=None, help="filter parameter, name=value (default sigma=2 for gaussian)")
    parser.add_argument("--cpu", action="store_true", help="CPU time of the process (all threads, system time included), not wall time")
    args = parser.parse_args(argv)
    global clock
    clock = time.process_time if args.cpu else time.perf_counter
    os.environ.setdefault("IMGCONV_COMPILE", "foreground")  # the compiled kernels, as a warm apply runs them

    from imgconv import pipeline
    from imgconv.chain import parse_chain
    from imgconv.kernels import load_catalog

    params = args.param if args.param is not None else (["sigma=2"] if args.filter == "gaussian" else [])
    job = pipeline.Job(chain=parse_chain([args.filter], load_catalog(), params=params))

    with tempfile.TemporaryDirectory(prefix="imgconv-bench-pipeline-") as work:
        work = Path(work)
        files = args.files or [make_photo(work)]
        pipeline.filter_file(job, files[0], work / ("warm" + files[0].suffix))  # numba's cache, outside the timings
        samples = instrument()
        import warnings

        for path in files:
            runs = defaultdict(list)
            for _ in range(args.runs):
                samples.clear()
                out = work / ("out" + path.suffix)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = clock()
                    pipeline.filter_file(job, path, out)
                    samples["total"] = clock() - t0
                samples["read, other"] = samples["read"] - samples["open"] - samples["decode"] - samples["to array"]
                samples["write, other"] = samples["write"] - samples["to image"] - samples["encode"]
                for phase in PHASES:
                    runs[phase].append(samples[phase] * 1000)
            size = os.path.getsize(path)
            what = "CPU ms" if args.cpu else "ms"
            print(f"{path.name} ({size // 1024} KiB), {args.filter} {params or ''}, {args.runs} runs, median {what} (min-max):")
            for phase in PHASES:
                values = runs[phase]
                print(f"  {phase:<13} {statistics.median(values):7.1f}   ({min(values):.1f}-{max(values):.1f})")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
