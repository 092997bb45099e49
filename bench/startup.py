"""Start-up costs a user waits for: the fast commands, the first runs after
installing, and warm `imgconv apply` against a Python + Pillow one-liner and a
pyvips one-liner doing the same job (the start-up issue's targets).

    python bench/startup.py [--runs 7] [--skip-first-run]

Uses the `imgconv` command installed beside this Python.  "First run" gets an
empty NUMBA_CACHE_DIR: with the default policy the command filters in numpy and
starts the background compile (waited for before the next measurement, and
its duration reported from its marker); with IMGCONV_COMPILE=foreground the
command compiles the kernels itself.  Warm runs are interleaved, round by
round, so the ratios compare like with like on a shared machine; warm `imgconv`
runs twice: handed to the resident worker (started beforehand, as two commands
in a row start it) and in its own process (IMGCONV_RESIDENT=off).
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PILLOW_GAUSS = (
    "import sys\nfrom PIL import Image, ImageFilter\n"
    "Image.open(sys.argv[1]).filter(ImageFilter.GaussianBlur(2)).save(sys.argv[2], quality=95)\n"
)
PILLOW_SHARPEN = (
    "import sys\nfrom PIL import Image, ImageFilter\n"
    "k = ImageFilter.Kernel((3, 3), [0, -1, 0, -1, 5, -1, 0, -1, 0], scale=1)\n"
    "Image.open(sys.argv[1]).filter(k).save(sys.argv[2])\n"
)
VIPS_GAUSS = "import sys, pyvips\npyvips.Image.new_from_file(sys.argv[1]).gaussblur(2).write_to_file(sys.argv[2] + '[Q=95]')\n"
VIPS_SHARPEN = (
    "import sys, pyvips\n"
    "m = pyvips.Image.new_from_array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])\n"
    "pyvips.Image.new_from_file(sys.argv[1]).conv(m).cast('uchar').write_to_file(sys.argv[2])\n"
)


def wall(command, env=None):
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def wait_for_compile(cache, timeout=900):
    """Seconds the background compile recorded in its marker (after waiting for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        markers = glob.glob(os.path.join(cache, "imgconv-compiled-*.json"))
        if markers:
            return json.loads(Path(markers[0]).read_text()).get("seconds", float("nan"))
        time.sleep(0.2)
    return float("nan")


def start_resident(imgconv, arguments, env, timeout=120):
    """Start the resident worker for ``env`` as a user's two commands in a row do, and
    wait until it takes commands (its socket listens)."""
    import glob as globbing

    folder = os.path.join(env["XDG_RUNTIME_DIR"], f"imgconv-{os.getuid()}")
    for _ in range(2):
        subprocess.run([imgconv, *arguments], check=True, capture_output=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = "".join(Path(path).read_text() for path in globbing.glob(os.path.join(folder, "*.log")))
        if "listening on" in logs:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no resident worker started in {folder}")


def stop_resident(env):
    subprocess.run([sys.executable, "-m", "imgconv.resident", "stop"], capture_output=True, env=env)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--skip-first-run", action="store_true", help="leave out the empty-cache runs (minutes: each waits for its compile)")
    args = parser.parse_args()
    from PIL import Image

    imgconv = shutil.which("imgconv") or str(Path(sys.executable).parent / "imgconv")
    work = Path(tempfile.mkdtemp(prefix="imgconv-startup-"))
    photo = work / "photo.jpg"  # 12 MP, quality 95, as bench/cli.py makes it
    Image.open(REPO / "samples" / "rocket.jpg").convert("RGB").resize((4240, 2832), Image.LANCZOS).save(photo, quality=95)
    small = str(REPO / "samples" / "astronaut.png")  # 512x512 RGB
    for name, code in (("pil_gauss.py", PILLOW_GAUSS), ("pil_sharpen.py", PILLOW_SHARPEN), ("vips_gauss.py", VIPS_GAUSS), ("vips_sharpen.py", VIPS_SHARPEN)):
        (work / name).write_text(code)
    out_jpg, out_png = str(work / "out.jpg"), str(work / "out.png")
    # The default policy, and byte-compiled modules as an installed package has them.
    env = {k: v for k, v in os.environ.items() if k not in ("IMGCONV_COMPILE", "PYTHONDONTWRITEBYTECODE", "IMGCONV_RESIDENT")}
    env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="imgconv-startup-run-")  # this run's own workers
    direct = dict(env, IMGCONV_RESIDENT="off")

    def median(command, environment=None):
        return statistics.median(wall(command, environment) for _ in range(args.runs))

    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {args.runs} runs, median wall seconds")
    print()
    print("| command | seconds |")
    print("| --- | ---: |")
    for name, command in (
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("python -c 'import numba'", [sys.executable, "-c", "import numba"]),
        ("imgconv --help", [imgconv, "--help"]),
        ("imgconv list", [imgconv, "list"]),
        ("imgconv show gaussian", [imgconv, "show", "gaussian"]),
    ):
        print(f"| `{name}` | {median(command, env):.3f} |")

    print()
    print("## First run after installing (an empty numba cache)")
    print()
    print("| job | policy | command s | background compile s |")
    print("| --- | --- | ---: | ---: |")
    jobs = (
        ("gaussian sigma 2, 12 MP JPEG", ["apply", "gaussian", "-p", "sigma=2", str(photo), out_jpg]),
        ("sharpen, 512x512 PNG", ["apply", "sharpen", small, out_png]),
    )
    for job, arguments in () if args.skip_first_run else jobs:
        for policy in ("background", "foreground"):
            times, compiles = [], []
            for _ in range(max(1, args.runs // 3)):
                cache = tempfile.mkdtemp(prefix="imgconv-cold-")
                run_env = dict(direct, NUMBA_CACHE_DIR=cache, IMGCONV_COMPILE=policy)
                times.append(wall([imgconv, *arguments], run_env))
                if policy == "background":
                    compiles.append(wait_for_compile(cache))
                shutil.rmtree(cache, ignore_errors=True)
            background = f"{statistics.median(compiles):.1f}" if compiles else ""
            print(f"| {job} | {policy} | {statistics.median(times):.2f} | {background} |")
            sys.stdout.flush()

    print()
    print("## Warm, interleaved (imgconv's numba cache filled)")
    print()
    print("| job | imgconv (resident worker) s | imgconv (own process) s | Pillow s | pyvips s | resident / Pillow | own / Pillow | resident / pyvips |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    # Fill the package's cache (a background compile may hold the lock: wait for its marker).
    wall([sys.executable, "-P", "-m", "imgconv.engine.compiled"], env)  # -P: the installed imgconv, not a checkout here
    marker = subprocess.run(
        [sys.executable, "-P", "-c", "from imgconv.engine import compiled; print(compiled._paths()[0])"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout.strip()
    wait_for_compile(os.path.dirname(marker))
    warm = (
        ("gaussian sigma 2, 12 MP JPEG", [imgconv, "apply", "gaussian", "-p", "sigma=2", str(photo), out_jpg], "gauss", str(photo), out_jpg),
        ("sharpen, 512x512 PNG", [imgconv, "apply", "sharpen", small, out_png], "sharpen", small, out_png),
    )
    start_resident(imgconv, ["apply", "sharpen", small, out_png], env)
    for job, command, kind, source, out in warm:
        peers = {
            "imgconv": command,
            "own": command,
            "pillow": [sys.executable, str(work / f"pil_{kind}.py"), source, out],
            "pyvips": [sys.executable, str(work / f"vips_{kind}.py"), source, out],
        }
        environments = {name: direct if name == "own" else env for name in peers}
        for name, peer in peers.items():
            wall(peer, environments[name])
        samples = {name: [] for name in peers}
        for _ in range(args.runs):
            for name, peer in peers.items():
                samples[name].append(wall(peer, environments[name]))
        m = {name: statistics.median(values) for name, values in samples.items()}
        print(
            f"| {job} | {m['imgconv']:.3f} | {m['own']:.3f} | {m['pillow']:.3f} | {m['pyvips']:.3f} | "
            f"{m['imgconv'] / m['pillow']:.2f} | {m['own'] / m['pillow']:.2f} | {m['imgconv'] / m['pyvips']:.2f} |"
        )
        sys.stdout.flush()
    stop_resident(env)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
