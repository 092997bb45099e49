"""Every filtering path against the single filter, as whole processes, on a 12 MP photo.

    python bench/chains.py [--runs 5] [--before DIR] [--size WxH] [--quality Q] [--paths NAME ...]

Each path (a chain, ``--repeat``, ``--strength``, ``--linear``, alpha premultiplied)
runs as its own ``imgconv apply`` process, interleaved with the others round by round;
the table gives each path's median wall time and its peak resident memory (the child's
peak, from ``/usr/bin/time -f %M``) as ratios to the single filter's
(``gaussian:sigma=2`` on the JPEG; the alpha paths on an RGBA PNG of the same pixels,
against ``--alpha separate`` there, which does no per-row arithmetic).  ``--size`` makes the
photo another size (issue 14's 100 MP case: ``--size 12240x8160 --quality 90 --paths
"single filter" "chain gaussian,sharpen"``), ``--paths`` runs only the paths named (the
baselines they need are added).  ``--before DIR``
(a checkout of another revision, e.g. ``git archive main | tar -x -C DIR``) runs every
command with that ``imgconv`` too, in the same rounds, for a before/after table.
Kernels run compiled (``IMGCONV_COMPILE=foreground``; the first, untimed round fills
numba's cache).  Also checks that ``--linear`` with ``identity`` on a 16-bit TIFF gives
back the very pixels.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

PATHS = {
    "single filter": ("jpg", ["gaussian:sigma=2"]),
    "chain gaussian,sharpen": ("jpg", ["gaussian:sigma=2,sharpen"]),
    "--repeat 2": ("jpg", ["gaussian:sigma=2", "--repeat", "2"]),
    "--strength 0.5": ("jpg", ["gaussian:sigma=2", "--strength", "0.5"]),
    "--linear": ("jpg", ["gaussian:sigma=2", "--linear"]),
    "RGBA --alpha separate": ("png", ["gaussian:sigma=2", "--alpha", "separate"]),
    "RGBA --alpha premultiplied": ("png", ["gaussian:sigma=2", "--alpha", "premultiplied"]),
}
BASELINE = {"png": "RGBA --alpha separate", "jpg": "single filter"}


def make_inputs(work, size=(4240, 2832), quality=95, png=True):
    from PIL import Image

    photo = Image.open(REPO / "samples" / "rocket.jpg").convert("RGB").resize(size, Image.LANCZOS)
    photo.save(work / "photo.jpg", quality=quality)
    if not png:
        return {"jpg": work / "photo.jpg"}
    rgba = photo.copy()
    y, x = np.mgrid[0:photo.height, 0:photo.width]
    # An alpha that fades out towards the corners, fully transparent in them.
    reach = 2400 * photo.width / 4240  # the fade scales with the photo
    alpha = np.clip(400 - np.hypot(x - photo.width / 2, y - photo.height / 2) * 400 / reach, 0, 255).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(work / "photo.png", compress_level=1)
    return {"jpg": work / "photo.jpg", "png": work / "photo.png"}


def timed(command, env):
    """(seconds, peak MiB) of one process (its peak from /usr/bin/time, whose own small
    process forks it: a child forked from this one would start from this one's peak).
    Run from the temporary folder: ``python -m`` puts the working folder first on
    ``sys.path``, before ``PYTHONPATH``."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=tempfile.gettempdir(),
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {result.stderr[-500:]}")
    return seconds, int(result.stderr.strip().splitlines()[-1]) / 1024


def linear_round_trip(work, env):
    """Whether ``--linear identity`` gives a 16-bit TIFF back unchanged."""
    from imgconv import io  # 16-bit colour TIFFs go through imgconv's own codec

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (300, 400, 3), dtype=np.uint16)
    source, out = work / "deep.tif", work / "deep-out.tif"
    io.write_image(source, pixels)
    command = [sys.executable, "-m", "imgconv", "apply", "identity", "--linear", str(source), str(out)]
    subprocess.run(command, env=env, check=True, cwd=tempfile.gettempdir())
    return bool(np.array_equal(io.read_image(out).pixels, pixels))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", help="a checkout of the revision to compare with")
    parser.add_argument("--after", default=str(REPO), help="the checkout to measure (default: this one)")
    parser.add_argument("--size", default="4240x2832", help="the photo's WxH (default: 12 MP)")
    parser.add_argument("--quality", type=int, default=95, help="the JPEG's quality")
    parser.add_argument("--paths", nargs="+", choices=sorted(PATHS), help="only these paths (and their baselines)")
    args = parser.parse_args()
    size = tuple(int(n) for n in args.size.lower().split("x"))
    paths = [p for p in PATHS if args.paths is None or p in args.paths or p in {BASELINE[PATHS[q][0]] for q in args.paths}]

    work = Path(tempfile.mkdtemp(prefix="imgconv-chains-"))
    inputs = make_inputs(work, size, args.quality, png=any(PATHS[p][0] == "png" for p in paths))
    # IMGCONV_RESIDENT=off: the process measured is the one that filters (its peak memory is the command's).
    env = dict(os.environ, IMGCONV_COMPILE="foreground", IMGCONV_RESIDENT="off")
    versions = {"after": dict(env, PYTHONPATH=str(Path(args.after).resolve()))}
    if args.before:
        versions["before"] = dict(env, PYTHONPATH=str(Path(args.before).resolve()))
    out = {"jpg": str(work / "out.jpg"), "png": str(work / "out.png")}

    def command(path):
        kind, options = PATHS[path]
        return [sys.executable, "-m", "imgconv", "apply", *options, str(inputs[kind]), out[kind]]

    for version, version_env in versions.items():  # fills each version's numba cache
        for path in paths:
            timed(command(path), version_env)
    samples = {(v, p): [] for v in versions for p in paths}
    for round_ in range(args.runs):
        order = list(samples)
        if round_ % 2:
            order.reverse()  # alternate the order, so no path always follows the same one
        for version, path in order:
            samples[(version, path)].append(timed(command(path), versions[version]))

    kinds = " and RGBA PNG" if "png" in inputs else ""
    print(f"# {size[0] * size[1] / 1e6:.0f} MP ({size[0]}x{size[1]}) JPEG (quality {args.quality}){kinds}, {args.runs} interleaved runs, median wall time, peak RSS")
    print()
    heads = " | ".join(f"{v} s | {v} MiB | {v} time / base | {v} memory / base" for v in versions)
    print(f"| path | {heads} |")
    print("| --- |" + " ---: |" * (4 * len(versions)))
    for path in paths:
        cells = []
        for version in versions:
            seconds = statistics.median(t for t, _ in samples[(version, path)])
            peak = statistics.median(m for _, m in samples[(version, path)])
            base = samples[(version, BASELINE[PATHS[path][0]])]
            base_s, base_m = statistics.median(t for t, _ in base), statistics.median(m for _, m in base)
            cells.append(f"{seconds:.2f} | {peak:.0f} | {seconds / base_s:.2f} | {peak / base_m:.2f}")
        print(f"| {path} | " + " | ".join(cells) + " |")
    single = {v: samples[(v, "single filter")] for v in versions}
    for version in versions:
        t, m = statistics.median(x for x, _ in single[version]), statistics.median(y for _, y in single[version])
        print(f"\n{version}: single filter {t:.2f} s, {m:.0f} MiB", end="")
    print()
    for version, version_env in versions.items():
        print(f"{version}: --linear identity on a 16-bit TIFF is exact: {linear_round_trip(work, version_env)}")


if __name__ == "__main__":
    main()
