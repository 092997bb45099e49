"""Start-up costs a user waits for: the fast commands, importing numba, the
first (cold, compiling) and later (warm, cached) runs of `imgconv apply`.

    python bench/startup.py [--runs 5]

Uses the `imgconv` command installed beside this Python; a cold run gets an
empty NUMBA_CACHE_DIR.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def wall(command, env=None):
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    imgconv = shutil.which("imgconv") or str(Path(sys.executable).parent / "imgconv")
    photo = str(REPO / "samples" / "astronaut.png")
    out = str(Path(tempfile.mkdtemp()) / "out.png")

    def median(command, env=None):
        return statistics.median(wall(command, env) for _ in range(args.runs))

    def cold(command):
        times = []
        for _ in range(max(1, args.runs // 2)):
            env = dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="imgconv-cold-"))
            times.append(wall(command, env))
        return statistics.median(times)

    rows = [
        ("python -c pass", median([sys.executable, "-c", "pass"])),
        ("python -c 'import numba'", median([sys.executable, "-c", "import numba"])),
        ("imgconv --help", median([imgconv, "--help"])),
        ("imgconv list", median([imgconv, "list"])),
        ("imgconv show gaussian", median([imgconv, "show", "gaussian"])),
        ("imgconv apply sharpen astronaut.png (cold cache)", cold([imgconv, "apply", "sharpen", photo, out])),
        ("imgconv apply sharpen astronaut.png (warm cache)", median([imgconv, "apply", "sharpen", photo, out])),
        ("imgconv apply gaussian sigma=2 astronaut.png (cold cache)", cold([imgconv, "apply", "gaussian", "-p", "sigma=2", photo, out])),
        ("imgconv apply gaussian sigma=2 astronaut.png (warm cache)", median([imgconv, "apply", "gaussian", "-p", "sigma=2", photo, out])),
    ]
    print("| command | seconds (median) |")
    print("| --- | ---: |")
    for name, seconds in rows:
        print(f"| `{name}` | {seconds:.2f} |")


if __name__ == "__main__":
    main()
