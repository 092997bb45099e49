"""End-to-end benchmark: whole commands on a 12-megapixel JPEG.

Each command runs as its own process, several times, interleaved; the table
gives the median wall time and the peak resident memory (/usr/bin/time -v).

    python bench/cli.py [--runs 5]

Peers: libvips's `vips` (its defaults, and the equal-quality float form),
ImageMagick's `convert`, and Python scripts using Pillow and OpenCV.  All write
JPEG at quality 95 (the source is a quality-95 4:2:0 JPEG, whose own tables and
subsampling imgconv keeps, so all write alike).  `imgconv (cold)` runs with an empty
numba cache, as the first run after installing: it filters in numpy and starts the
background compile, which is waited for (outside the timing) before the next command.
`imgconv apply (warm)` runs without the resident worker (IMGCONV_RESIDENT=off: the
process measured is the one that filters, so its peak memory is the command's);
`imgconv apply (resident worker)` hands the command to a worker started beforehand
(its peak memory column is the caller's alone: the filtering happens in the worker's copy).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from startup import start_resident, stop_resident, wait_for_compile  # bench/ is on sys.path as a script

REPO = Path(__file__).resolve().parent.parent

PILLOW_GAUSS = """
import sys
from PIL import Image, ImageFilter
Image.open(sys.argv[1]).filter(ImageFilter.GaussianBlur(2)).save(sys.argv[2], quality=95)
"""
PILLOW_SHARPEN = """
import sys
from PIL import Image, ImageFilter
k = ImageFilter.Kernel((3, 3), [0, -1, 0, -1, 5, -1, 0, -1, 0], scale=1)
Image.open(sys.argv[1]).filter(k).save(sys.argv[2], quality=95)
"""
OPENCV_GAUSS = """
import sys, cv2
img = cv2.imread(sys.argv[1])
cv2.imwrite(sys.argv[2], cv2.GaussianBlur(img, (17, 17), 2.0), [cv2.IMWRITE_JPEG_QUALITY, 95])
"""
OPENCV_SHARPEN = """
import sys, cv2, numpy as np
img = cv2.imread(sys.argv[1])
k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
cv2.imwrite(sys.argv[2], cv2.filter2D(img, -1, k), [cv2.IMWRITE_JPEG_QUALITY, 95])
"""


def run(command, env=None):
    timed = ["/usr/bin/time", "-v"] + command
    result = subprocess.run(timed, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-500:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours = int(wall.group(1) or 0)
    seconds = hours * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return seconds, peak_kb / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-cold", action="store_true", help="leave out the cold row (each run waits for a whole background compile: minutes)")
    args = parser.parse_args()

    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="imgconv-bench-"))
    source = work / "photo.jpg"
    Image.open(REPO / "samples" / "rocket.jpg").convert("RGB").resize((4240, 2832), Image.LANCZOS).save(source, quality=95)
    (work / "sharpen.mat").write_text("3 3 1 0\n0 -1 0\n-1 5 -1\n0 -1 0\n")
    for name, code in [("pil_gauss.py", PILLOW_GAUSS), ("pil_sharpen.py", PILLOW_SHARPEN), ("cv_gauss.py", OPENCV_GAUSS), ("cv_sharpen.py", OPENCV_SHARPEN)]:
        (work / name).write_text(code)
    imgconv = shutil.which("imgconv") or str(Path(sys.executable).parent / "imgconv")
    out = str(work / "out.jpg")
    cold_env = {k: v for k, v in os.environ.items() if k != "IMGCONV_COMPILE"}
    cold_env["IMGCONV_RESIDENT"] = "off"
    served_env = {k: v for k, v in os.environ.items() if k not in ("IMGCONV_COMPILE", "IMGCONV_RESIDENT")}
    served_env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="imgconv-bench-run-")
    direct_env = dict(served_env, IMGCONV_RESIDENT="off")

    def cold(command):
        def go():
            cache = tempfile.mkdtemp(prefix="imgconv-cold-")
            cold_env["NUMBA_CACHE_DIR"] = cache
            result = run(command, env=cold_env)
            wait_for_compile(cache)  # the background compile, not to run beside the next command
            shutil.rmtree(cache, ignore_errors=True)
            return result

        return go

    cases = {
        "gaussian sigma 2": {
            "imgconv apply (warm)": lambda: run([imgconv, "apply", "gaussian", "-p", "sigma=2", str(source), out], direct_env),
            "imgconv apply (resident worker)": lambda: run([imgconv, "apply", "gaussian", "-p", "sigma=2", str(source), out], served_env),
            "imgconv apply (cold)": cold([imgconv, "apply", "gaussian", "-p", "sigma=2", str(source), out]),
            "vips gaussblur (defaults)": lambda: run(["vips", "gaussblur", str(source), out + "[Q=95]", "2"]),
            "vips gaussblur (float, min-ampl 0.001)": lambda: run(
                ["vips", "gaussblur", str(source), out + "[Q=95]", "2", "--min-ampl", "0.001", "--precision", "float"]
            ),
            "convert -blur 0x2": lambda: run(["convert", str(source), "-blur", "0x2", "-quality", "95", out]),
            "Python + Pillow": lambda: run([sys.executable, str(work / "pil_gauss.py"), str(source), out]),
            "Python + OpenCV": lambda: run([sys.executable, str(work / "cv_gauss.py"), str(source), out]),
        },
        "sharpen 3x3": {
            "imgconv apply (warm)": lambda: run([imgconv, "apply", "sharpen", str(source), out], direct_env),
            "imgconv apply (resident worker)": lambda: run([imgconv, "apply", "sharpen", str(source), out], served_env),
            "vips conv (defaults)": lambda: run(["vips", "conv", str(source), out + "[Q=95]", str(work / "sharpen.mat")]),
            "vips conv (float)": lambda: run(
                ["vips", "conv", str(source), out + "[Q=95]", str(work / "sharpen.mat"), "--precision", "float"]
            ),
            "Python + Pillow": lambda: run([sys.executable, str(work / "pil_sharpen.py"), str(source), out]),
            "Python + OpenCV": lambda: run([sys.executable, str(work / "cv_sharpen.py"), str(source), out]),
        },
    }
    if args.no_cold:
        cases["gaussian sigma 2"].pop("imgconv apply (cold)")
    start_resident(imgconv, ["apply", "sharpen", str(source), out], served_env)
    print(f"# 12 MP JPEG ({source.stat().st_size // 1024} KiB), {args.runs} runs, median wall time, peak RSS")
    print()
    print("| job | command | seconds | peak MiB | imgconv (warm) / this |")
    print("| --- | --- | ---: | ---: | ---: |")
    for job, commands in cases.items():
        for name, command in list(commands.items()):  # warm caches (imgconv's numba cache included)
            if name == "imgconv apply (cold)":
                continue
            try:
                command()
            except RuntimeError as error:
                if name.startswith("imgconv"):
                    raise
                print(f"# left out, it failed here: {name}: {str(error).splitlines()[0][:200]}", file=sys.stderr)
                commands.pop(name)
        samples = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                samples[name].append(command())
        mine = statistics.median(t for t, _ in samples["imgconv apply (warm)"])
        for name, values in samples.items():
            seconds = statistics.median(t for t, _ in values)
            peak = max(m for _, m in values)
            print(f"| {job} | {name} | {seconds:.2f} | {peak:.0f} | {mine / seconds:.2f} |")
        sys.stdout.flush()
    stop_resident(served_env)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
