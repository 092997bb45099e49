"""Benchmark of ``imgconv batch`` against a vips shell loop and a Pillow loop.

Generates 200 photographs of 2 to 12 megapixels from ``samples/`` (tiled
mirror-wise and resized, with a little grain so the JPEGs are photo-like) into
a temporary folder (reused by later runs: the set is deterministic), then
times, each on the same files, Gaussian sigma 2, JPEG in and out at quality 95:

- ``imgconv batch gaussian -p sigma=2 --jobs 1`` and ``--jobs 2`` (the command
  as a user runs it: process start, numba cache load and workers included),
  and ``--jobs 1`` held to one core (``NUMBA_NUM_THREADS=1``: by default the
  one worker filters on every core);
- a shell loop running ``vips gaussblur IN OUT[Q=95] 2`` once per file
  (vips itself uses every core for each file);
- one Python process looping over the files with Pillow
  (``ImageFilter.GaussianBlur(2)``, a box-blur approximation).

Usage::

    python bench/batch.py                       # everything, 200 images
    python bench/batch.py --count 40 --runs imgconv-1 imgconv-2
    python bench/batch.py --markdown            # the table for docs/performance.md

Needs Pillow (a dependency of imgconv) and, for the vips row, ``vips`` on PATH
(Debian: ``apt-get install libvips-tools``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SIGMA = 2.0
QUALITY = 95
RUNS = ("imgconv-1", "imgconv-2", "imgconv-1-one-thread", "vips-loop", "vips-loop-float", "pillow-loop")
LABELS = {
    "imgconv-1": "imgconv batch --jobs 1",
    "imgconv-2": "imgconv batch --jobs 2",
    "imgconv-1-one-thread": "imgconv batch --jobs 1, NUMBA_NUM_THREADS=1",
    "vips-loop": "vips gaussblur, shell loop",
    "vips-loop-float": "vips gaussblur float 17 taps, shell loop",
    "pillow-loop": "Pillow loop, one process",
}
ASPECTS = ((4, 3), (3, 2), (16, 9), (1, 1))


def _megapixels(rng):
    return rng.uniform(2.0, 12.0)


def generate(folder: Path, count: int, seed: int = 5) -> list[tuple[Path, int]]:
    """``count`` JPEG photographs of 2..12 MP in ``folder``; returns (path, pixels)."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / f".complete-{count}-{seed}"
    rng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*")) if p.suffix in (".png", ".jpg")]
    plan = []
    for index in range(count):
        mp = _megapixels(rng)
        aw, ah = rng.choice(ASPECTS)
        if rng.random() < 0.3:
            aw, ah = ah, aw  # portrait
        height = int(round((mp * 1e6 * ah / aw) ** 0.5))
        width = int(round(mp * 1e6 / height))
        plan.append((folder / f"{index // 50:02d}" / f"photo-{index:03d}.jpg", width, height, rng.randrange(len(sources)), rng.random()))
    if not stamp.exists():
        import numpy as np

        for path, width, height, source, jitter in plan:
            path.parent.mkdir(exist_ok=True)
            base = sources[source]
            # Mirror-tile the sample 2x2, crop a random window, resize to the target.
            tile = Image.new("RGB", (base.width * 2, base.height * 2))
            tile.paste(base, (0, 0))
            tile.paste(ImageOps.mirror(base), (base.width, 0))
            tile.paste(ImageOps.flip(base), (0, base.height))
            tile.paste(ImageOps.flip(ImageOps.mirror(base)), (base.width, base.height))
            cw, ch = int(tile.width * (0.6 + 0.4 * jitter)), int(tile.height * (0.6 + 0.4 * jitter))
            left, top = int((tile.width - cw) * jitter), int((tile.height - ch) * (1 - jitter))
            image = tile.crop((left, top, left + cw, top + ch)).resize((width, height), Image.Resampling.BICUBIC)
            grain = np.random.default_rng(hash(path.name) & 0xFFFF).normal(0, 4, (height, width, 1)).astype(np.float32)
            pixels = np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        stamp.write_text("ok\n")
    return [(path, width * height) for path, width, height, _, _ in plan]


def run_imgconv(in_dir, out_dir, jobs, threads=None):
    """The command as a user runs it (this checkout's imgconv, not an installed copy)."""
    command = ["imgconv", "batch", "gaussian", "-p", f"sigma={SIGMA:g}", "IN", "OUT", "--jobs", str(jobs), "--quiet"]
    argv = [sys.executable, "-m", "imgconv"] + command[1:5] + [str(in_dir), str(out_dir)] + command[7:]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
        command = [f"NUMBA_NUM_THREADS={threads}"] + command
    return command, subprocess.run(argv, capture_output=True, text=True, env=env)


# vips's defaults cut the Gaussian where it falls below 0.2 of its peak and
# convolve 8-bit images in integers: 7 taps for sigma 2.  These options make
# it do imgconv's work: float, 17 taps (radius 4 sigma, as scipy and imgconv).
VIPS_LIKE_IMGCONV = "--precision float --min-ampl 0.0003"


def run_vips(files, in_dir, out_dir, options=""):
    script = (
        'cd "$1" && shift && out="$1" && shift && '
        f'for f in "$@"; do mkdir -p "$out/$(dirname "$f")" && vips gaussblur "$f" "$out/$f[Q={QUALITY}]" {SIGMA:g} {options} || exit 1; done'
    )
    relative = [str(p.relative_to(in_dir)) for p in files]
    command = ["sh", "-c", script, "sh", str(in_dir), str(out_dir), *relative]
    shown = f'for f in ...; do vips gaussblur "$f" "out/$f[Q={QUALITY}]" {SIGMA:g} {options}; done'.replace(" ;", ";")
    return ["sh", "-c", shown], subprocess.run(command, capture_output=True, text=True)


PILLOW_LOOP = f"""
import sys
from pathlib import Path
from PIL import Image, ImageFilter
in_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
for name in sys.argv[3:]:
    target = out_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(in_dir / name) as im:
        im.filter(ImageFilter.GaussianBlur({SIGMA})).save(target, quality={QUALITY})
"""


def run_pillow(files, in_dir, out_dir):
    relative = [str(p.relative_to(in_dir)) for p in files]
    command = [sys.executable, "-c", PILLOW_LOOP, str(in_dir), str(out_dir), *relative]
    return ["python", "-c", "<Pillow loop: open, GaussianBlur(2), save quality 95>"], subprocess.run(command, capture_output=True, text=True)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--data", type=Path, default=None, help="folder for the generated photographs (default: a temp folder)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--repeat", type=int, default=1, help="time each run this many times; the best is kept")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)

    data = args.data or Path(tempfile.gettempdir()) / f"imgconv-bench-batch-{args.count}"
    started = time.perf_counter()
    files = generate(data, args.count)
    total_mp = sum(pixels for _, pixels in files) / 1e6
    print(f"{len(files)} photographs, {total_mp:.0f} MP in all, in {data} ({time.perf_counter() - started:.0f} s to prepare)", file=sys.stderr)

    # Warm numba's cache (a first run compiles), outside the timings.
    warm = Path(tempfile.mkdtemp(prefix="imgconv-bench-warm-"))
    try:
        shutil.copy(files[0][0], warm / "a.jpg")
        run_imgconv(warm, warm / "out", 1)
    finally:
        shutil.rmtree(warm, ignore_errors=True)

    rows = []
    for name in args.runs:
        if name.startswith("vips-") and shutil.which("vips") is None:
            print("vips not found on PATH: skipping the vips row", file=sys.stderr)
            continue
        best = None
        for _ in range(args.repeat):
            out_dir = Path(tempfile.mkdtemp(prefix="imgconv-bench-out-"))
            try:
                t0 = time.perf_counter()
                if name == "imgconv-1-one-thread":
                    command, result = run_imgconv(data, out_dir, 1, threads=1)
                elif name.startswith("imgconv-"):
                    command, result = run_imgconv(data, out_dir, int(name.split("-")[1]))
                elif name == "vips-loop":
                    command, result = run_vips([p for p, _ in files], data, out_dir)
                elif name == "vips-loop-float":
                    command, result = run_vips([p for p, _ in files], data, out_dir, VIPS_LIKE_IMGCONV)
                else:
                    command, result = run_pillow([p for p, _ in files], data, out_dir)
                seconds = time.perf_counter() - t0
                written = sum(1 for p in out_dir.rglob("*.jpg"))
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
            if result.returncode != 0 or written != len(files):
                raise SystemExit(f"{name} failed ({result.returncode}, {written} of {len(files)} written): {result.stderr[-2000:]}")
            best = seconds if best is None else min(best, seconds)
        rows.append((name, " ".join(command), best))
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{name}: {best:.1f} s, {len(files) / best:.2f} images/s, {total_mp / best:.1f} MP/s (load {load:.1f})", file=sys.stderr)
        print(f"  {' '.join(command)}", file=sys.stderr)

    today = datetime.date.today().isoformat()
    print(f"\n{today}, {machine()}; {len(files)} JPEGs, {total_mp:.0f} MP, Gaussian sigma {SIGMA:g}, JPEG quality {QUALITY}")
    by_name = {name: seconds for name, _, seconds in rows}
    if args.markdown:
        print("\n| run | seconds | images/s | MP/s | vs --jobs 1 |\n| --- | ---: | ---: | ---: | ---: |")
    for name, command, seconds in rows:
        ratio = f"{by_name['imgconv-1'] / seconds:.2f}x" if "imgconv-1" in by_name else "-"
        label = LABELS[name]
        if args.markdown:
            print(f"| {label} | {seconds:.1f} | {len(files) / seconds:.2f} | {total_mp / seconds:.1f} | {ratio} |")
        else:
            print(f"{label:<30} {seconds:7.1f} s {len(files) / seconds:7.2f} images/s {total_mp / seconds:7.1f} MP/s  {ratio}")


if __name__ == "__main__":
    main()
