"""Benchmark of ``imgconv batch`` against a parallel vips loop (and a vips shell loop, a Pillow loop).

Generates photographs of 3 to 12 megapixels (30 by default) from ``samples/``
(tiled mirror-wise, cropped and resized, with a little grain so the JPEGs are
photo-like) into a temporary folder (reused by later runs: the set is
deterministic), then times, each on the same files, Gaussian sigma 2, JPEG in
and out:

- ``imgconv batch gaussian -p sigma=2 --jobs 2`` (and ``--jobs 1``, and
  ``--jobs 1`` held to one core, ``NUMBA_NUM_THREADS=1``), the command as a
  user runs it: process start, numba cache load and workers included; the
  outputs keep each input's JPEG tables (quality 90);
- a pool of 2 pyvips processes, the parallel vips loop without a process start
  per file (a harder peer than the command; it runs where ``vips`` is not on
  PATH): each loops over the files it takes, ``pyvips.Image.new_from_file(f,
  access="sequential").gaussblur(2).write_to_file(out, Q=90)``, with vips's
  defaults (a Gaussian cut at 0.2 of its peak, integer arithmetic: 7 taps for
  sigma 2; vips's own thread pool in each process), and the equal-precision
  form ``precision="float", min_ampl=0.001`` (13 taps, float); labelled
  ``pyvips pool`` in the table;
- where ``vips`` is on PATH, the parallel vips loop itself: ``xargs -P2`` running
  ``vips gaussblur`` once per file (a process per file, as users run it), with
  vips's defaults and with ``--precision float --min-ampl 0.0003`` (17 float
  taps, imgconv's work); and a serial shell loop (``vips-loop``, not by default);
- one Python process looping over the files with Pillow
  (``ImageFilter.GaussianBlur(2)``, a box-blur approximation).

Every contender runs once per round, in turn, for ``--repeat`` rounds; the
table gives each one's median and the throughput ratio of ``imgconv batch
--jobs 2`` to it (above 1: imgconv is faster).

Usage::

    python bench/batch.py                       # 30 images, 3 rounds
    python bench/batch.py --count 200 --min-mp 2 --runs imgconv-1 imgconv-2
    python bench/batch.py --markdown            # the table for docs/performance.md

Needs Pillow and pyvips (dependencies of imgconv: pyvips-binary brings libvips);
for the vips command rows, ``vips`` on PATH (Debian: ``apt-get install libvips-tools``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SIGMA = 2.0
QUALITY = 90  # what the inputs are written at, and the vips rows write (imgconv keeps each input's tables)
RUNS = ("imgconv-2", "imgconv-2-resident", "vips-xargs", "vips-xargs-float", "pyvips-pool", "pyvips-pool-float", "imgconv-1", "imgconv-1-one-thread", "vips-loop", "vips-loop-float", "pillow-loop")
DEFAULT_RUNS = ("imgconv-2", "imgconv-2-resident", "vips-xargs", "vips-xargs-float", "pyvips-pool", "pyvips-pool-float")
LABELS = {
    "imgconv-1": "imgconv batch --jobs 1",
    "imgconv-2": "imgconv batch --jobs 2",
    "imgconv-2-resident": "imgconv batch --jobs 2, served by the resident worker",
    "imgconv-1-one-thread": "imgconv batch --jobs 1, NUMBA_NUM_THREADS=1",
    "pyvips-pool": "pyvips pool of 2, gaussblur defaults",
    "pyvips-pool-float": "pyvips pool of 2, gaussblur precision=float min_ampl=0.001",
    "vips-xargs": "xargs -P2 vips gaussblur, defaults",
    "vips-xargs-float": "xargs -P2 vips gaussblur, float 17 taps",
    "vips-loop": "vips gaussblur, shell loop",
    "vips-loop-float": "vips gaussblur float 17 taps, shell loop",
    "pillow-loop": "Pillow loop, one process",
}
ASPECTS = ((4, 3), (3, 2), (16, 9), (1, 1))


def generate(folder: Path, count: int, seed: int = 5, min_mp: float = 3.0, max_mp: float = 12.0, samples: Path = SAMPLES):
    """``count`` JPEG photographs of ``min_mp``..``max_mp`` MP in ``folder``; returns [(path, pixels)]."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / f".complete-{count}-{seed}-{min_mp:g}-{max_mp:g}"
    rng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(samples.glob("*")) if p.suffix in (".png", ".jpg")]
    plan = []
    for index in range(count):
        mp = rng.uniform(min_mp, max_mp)
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
            Image.fromarray(pixels).save(path, quality=QUALITY)
        stamp.write_text("ok\n")
    return [(path, width * height) for path, width, height, _, _ in plan]


def wait_for_kernels(tree=REPO, timeout=1800):
    """Wait until ``tree``'s compiled kernels are in numba's cache (the background
    compile a first command starts has written its marker): until then its batch
    would filter in numpy (imgconv/engine/compiled.py)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    code = "from imgconv.engine.compiled import _paths; print(_paths()[0])"
    # (run in ``tree``: ``-c`` and ``-m`` put the working folder first on sys.path)
    marker = Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "imgconv.engine.compiled"], env=env, cwd=tree, check=True)  # compiles, unless another process is
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the kernels of {tree} were not compiled within {timeout} s")
        time.sleep(1)


# The resident worker's folder for this benchmark's served runs (the other imgconv rows run
# with the worker off: each is a whole fresh command, its workers forked from it).
RESIDENT_RUNTIME = Path(tempfile.mkdtemp(prefix="imgconv-bench-resident-"))


def run_imgconv(in_dir, out_dir, jobs, threads=None, tree=REPO, resident=False):
    """The command as a user runs it (this checkout's imgconv, or ``tree``'s, not an installed copy)."""
    command = ["imgconv", "batch", "gaussian", "-p", f"sigma={SIGMA:g}", "IN", "OUT", "--jobs", str(jobs), "--quiet"]
    argv = [sys.executable, "-m", "imgconv"] + command[1:5] + [str(in_dir), str(out_dir)] + command[7:]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    if resident:
        env.pop("IMGCONV_RESIDENT", None)
        env["XDG_RUNTIME_DIR"] = str(RESIDENT_RUNTIME)
    else:
        env["IMGCONV_RESIDENT"] = "off"
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
        command = [f"NUMBA_NUM_THREADS={threads}"] + command
    return command, subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tree)  # -m: the working folder comes first


def resident_worker():
    """The pid of the resident worker serving this benchmark (None before it listens)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"worker_main" in (entry / "cmdline").read_bytes() and f"XDG_RUNTIME_DIR={RESIDENT_RUNTIME}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    return None


def reaped_cpu(pid) -> float:
    """CPU seconds of the children ``pid`` has waited for (a resident worker's copies, and theirs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime


# vips's defaults cut the Gaussian where it falls below 0.2 of its peak and
# convolve 8-bit images in integers: 7 taps for sigma 2.  These options make
# it do imgconv's work: float, 17 taps (radius 4 sigma, as scipy and imgconv).
VIPS_LIKE_IMGCONV = "--precision float --min-ampl 0.0003"


def run_vips_xargs(files, in_dir, out_dir, options=""):
    """``ls | xargs -P2 -I{} vips gaussblur {} out/{} 2``, the parallel loop a vips user writes
    (writing at imgconv's quality; the folders made first, as ``mkdir -p`` would)."""
    relative = [str(p.relative_to(in_dir)) for p in files]
    for name in {Path(r).parent for r in relative}:
        (Path(out_dir) / name).mkdir(parents=True, exist_ok=True)
    shown = f"ls | xargs -P2 -I{{}} vips gaussblur {{}} 'out/{{}}[Q={QUALITY}]' {SIGMA:g} {options}".rstrip()
    command = ["xargs", "-0", "-P2", "-I{}", "vips", "gaussblur", "{}", f"{out_dir}/{{}}[Q={QUALITY}]", f"{SIGMA:g}", *options.split()]
    return ["sh", "-c", shown], subprocess.run(command, input="\0".join(relative), capture_output=True, text=True, cwd=in_dir)


def run_vips(files, in_dir, out_dir, options=""):
    script = (
        'cd "$1" && shift && out="$1" && shift && '
        f'for f in "$@"; do mkdir -p "$out/$(dirname "$f")" && vips gaussblur "$f" "$out/$f[Q={QUALITY}]" {SIGMA:g} {options} || exit 1; done'
    )
    relative = [str(p.relative_to(in_dir)) for p in files]
    command = ["sh", "-c", script, "sh", str(in_dir), str(out_dir), *relative]
    shown = f'for f in ...; do vips gaussblur "$f" "out/$f[Q={QUALITY}]" {SIGMA:g} {options}; done'.replace(" ;", ";")
    return ["sh", "-c", shown], subprocess.run(command, capture_output=True, text=True)


# The parallel vips loop in Python: pyvips (libvips from the pyvips-binary wheel, as
# imgconv's codec uses) in a pool of 2 processes, each taking the next file as it finishes
# one (as `xargs -P 2` hands them out), without a process start per file.  vips's defaults otherwise: its own thread pool in each process.
PYVIPS_POOL = f"""
import os, sys
from multiprocessing import get_context

def blur(task):
    import pyvips
    source, target, options = task
    os.makedirs(os.path.dirname(target), exist_ok=True)
    image = pyvips.Image.new_from_file(source, access="sequential")
    image.gaussblur({SIGMA}, **options).write_to_file(target, Q={QUALITY})
    return target

if __name__ == "__main__":
    in_dir, out_dir, precision, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    options = dict(precision="float", min_ampl=0.001) if precision == "float" else {{}}
    tasks = [(os.path.join(in_dir, n), os.path.join(out_dir, n), options) for n in names]
    with get_context("spawn").Pool(2) as pool:
        for _ in pool.imap_unordered(blur, tasks, chunksize=1):
            pass
"""


def run_pyvips(files, in_dir, out_dir, precision="default"):
    relative = [str(p.relative_to(in_dir)) for p in files]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(PYVIPS_POOL)
    try:
        command = [sys.executable, script.name, str(in_dir), str(out_dir), precision, *relative]
        result = subprocess.run(command, capture_output=True, text=True)
    finally:
        os.unlink(script.name)
    options = ', precision="float", min_ampl=0.001' if precision == "float" else ""
    shown = f"python <pool of 2 processes: pyvips gaussblur({SIGMA:g}{options}), write Q={QUALITY}>"
    return ["sh", "-c", shown], result


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
    return ["python", "-c", f"<Pillow loop: open, GaussianBlur({SIGMA:g}), save quality {QUALITY}>"], subprocess.run(command, capture_output=True, text=True)


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
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--min-mp", type=float, default=3.0, help="smallest photograph, megapixels (default 3)")
    parser.add_argument("--max-mp", type=float, default=12.0, help="largest photograph, megapixels (default 12)")
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="folder of source photographs (default samples/)")
    parser.add_argument("--data", type=Path, default=None, help="folder for the generated photographs (default: a temp folder)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(DEFAULT_RUNS))
    parser.add_argument("--repeat", type=int, default=3, help="rounds; every run once per round, in turn; the median is kept")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--compare-tree", type=Path, default=None, help="another checkout (an older commit): its `imgconv batch --jobs 2` runs too, in turn"
    )
    args = parser.parse_args(argv)

    data = args.data or Path(tempfile.gettempdir()) / f"imgconv-bench-batch-{args.count}-{args.min_mp:g}-{args.max_mp:g}"
    started = time.perf_counter()
    files = generate(data, args.count, min_mp=args.min_mp, max_mp=args.max_mp, samples=args.samples)
    total_mp = sum(pixels for _, pixels in files) / 1e6
    print(f"{len(files)} photographs, {total_mp:.0f} MP in all, in {data} ({time.perf_counter() - started:.0f} s to prepare)", file=sys.stderr)

    # Warm numba's cache (a first run compiles), outside the timings.
    warm = Path(tempfile.mkdtemp(prefix="imgconv-bench-warm-"))
    try:
        shutil.copy(files[0][0], warm / "a.jpg")
        run_imgconv(warm, warm / "out", 1)
        wait_for_kernels()
        if args.compare_tree is not None:
            run_imgconv(warm, warm / "out-other", 1, tree=args.compare_tree)
            wait_for_kernels(args.compare_tree)
        if "imgconv-2-resident" in args.runs:  # two commands start the worker
            for attempt in range(2):
                run_imgconv(warm, warm / f"out-resident-{attempt}", 2, resident=True)
            deadline = time.monotonic() + 60
            while resident_worker() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if resident_worker() is None:
                raise SystemExit("the resident worker did not start")
    finally:
        shutil.rmtree(warm, ignore_errors=True)

    runs = [name for name in args.runs if not (name.startswith("vips-") and shutil.which("vips") is None)]
    if len(runs) < len(args.runs):
        print("vips not found on PATH: skipping the vips command rows", file=sys.stderr)
    if args.compare_tree is not None:
        runs.insert(1, "imgconv-2-other")
        LABELS["imgconv-2-other"] = f"imgconv batch --jobs 2, {args.compare_tree}"
    sources = [p for p, _ in files]
    timings = {name: [] for name in runs}
    cpu_seconds = {name: [] for name in runs}
    commands = {}
    for round_ in range(args.repeat):
        for name in runs:
            out_dir = Path(tempfile.mkdtemp(prefix="imgconv-bench-out-"))
            try:
                t0, used0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                worker = resident_worker() if name == "imgconv-2-resident" else None
                served0 = reaped_cpu(worker) if worker else 0.0
                if name == "imgconv-2-other":
                    command, result = run_imgconv(data, out_dir, 2, tree=args.compare_tree)
                elif name == "imgconv-2-resident":
                    command, result = run_imgconv(data, out_dir, 2, resident=True)
                elif name == "imgconv-1-one-thread":
                    command, result = run_imgconv(data, out_dir, 1, threads=1)
                elif name.startswith("imgconv-"):
                    command, result = run_imgconv(data, out_dir, int(name.split("-")[1]))
                elif name.startswith("pyvips-pool"):
                    command, result = run_pyvips(sources, data, out_dir, "float" if name.endswith("float") else "default")
                elif name.startswith("vips-xargs"):
                    command, result = run_vips_xargs(sources, data, out_dir, VIPS_LIKE_IMGCONV if name.endswith("float") else "")
                elif name == "vips-loop":
                    command, result = run_vips(sources, data, out_dir)
                elif name == "vips-loop-float":
                    command, result = run_vips(sources, data, out_dir, VIPS_LIKE_IMGCONV)
                else:
                    command, result = run_pillow(sources, data, out_dir)
                seconds = time.perf_counter() - t0
                used1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # every process it waited for, workers too
                cpu = (used1.ru_utime - used0.ru_utime) + (used1.ru_stime - used0.ru_stime)
                if worker:  # the command's copy and its workers are the worker's children
                    if resident_worker() != worker:
                        raise SystemExit("the resident worker changed during the run")
                    cpu += reaped_cpu(worker) - served0
                written = sum(1 for p in out_dir.rglob("*.jpg"))
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
            if result.returncode != 0 or written != len(files):
                raise SystemExit(f"{name} failed ({result.returncode}, {written} of {len(files)} written): {result.stderr[-2000:]}")
            timings[name].append(seconds)
            cpu_seconds[name].append(cpu)
            commands[name] = " ".join(command)
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(f"round {round_ + 1} {name}: {seconds:.2f} s, {cpu:.2f} CPU s, {total_mp / seconds:.1f} MP/s (load {load:.1f})", file=sys.stderr)

    today = datetime.date.today().isoformat()
    print(f"\n{today}, {machine()}; {len(files)} JPEGs, {total_mp:.0f} MP, Gaussian sigma {SIGMA:g}, JPEG quality {QUALITY}; "
          f"medians of {args.repeat} interleaved rounds")
    median = {name: statistics.median(values) for name, values in timings.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu_seconds.items()}
    # The ratios of imgconv's throughput to each: from each round's own pair (the machine's load
    # changes between rounds), then the median.
    def ratios(name, base):
        if base not in timings:
            return "-", "-"
        wall = statistics.median(b / a for a, b in zip(timings[base], timings[name]))
        cpu = statistics.median(b / a for a, b in zip(cpu_seconds[base], cpu_seconds[name]))
        return f"{wall:.2f}", f"{cpu:.2f}"

    bases = [base for base in ("imgconv-2", "imgconv-2-resident") if base in timings]
    if args.markdown:
        heads = "".join(f" {LABELS[base]}: throughput / this | in CPU time |" for base in bases)
        print(f"\n| run | seconds (median) | range | MP/s | CPU seconds |{heads}")
        print("| --- | ---: | --- | ---: | ---: |" + " ---: | ---: |" * len(bases))
    for name in runs:
        seconds = median[name]
        spread = f"{min(timings[name]):.2f}-{max(timings[name]):.2f}"
        pairs = [ratios(name, base) for base in bases]
        if args.markdown:
            cells = "".join(f" {wall} | {cpu} |" for wall, cpu in pairs)
            print(f"| {LABELS[name]} | {seconds:.2f} | {spread} | {total_mp / seconds:.1f} | {cpu_median[name]:.2f} |{cells}")
        else:
            shown = "  ".join(f"ratio {wall} (CPU {cpu})" for wall, cpu in pairs)
            print(f"{LABELS[name]:<75} {seconds:6.2f} s ({spread}) {total_mp / seconds:6.1f} MP/s {cpu_median[name]:6.2f} CPU s  {shown}")
    for name in runs:
        print(f"  {name}: {commands[name]}", file=sys.stderr)
    if resident_worker() is not None:
        subprocess.run([sys.executable, "-m", "imgconv.resident", "stop"], env=dict(os.environ, XDG_RUNTIME_DIR=str(RESIDENT_RUNTIME)), cwd=REPO)
    shutil.rmtree(RESIDENT_RUNTIME, ignore_errors=True)


if __name__ == "__main__":
    main()
