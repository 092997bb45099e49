"""Regenerate the pictures the README shows, with imgconv's own commands.

    python docs/make_pictures.py

Run from anywhere; it uses the imgconv in this checkout (``python -m imgconv``)
and the photographs in ``samples/``.  Each picture is made by one command,
printed as it runs, so the README's pictures can be reproduced by hand.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

COMMANDS = [
    # A before/after strip: a sharpening and a chain (a light blur, then Kirsch compass edges).
    ["gallery", "samples/coffee.png", "docs/before-after.png", "--size", "220", "--columns", "3",
     "--tile", "unsharp:amount=1.5:sigma=1.5", "--tile", "gaussian:sigma=1,kirsch"],
    # Every filter of the catalog.
    ["gallery", "samples/chelsea.png", "docs/gallery.png", "--size", "88", "--columns", "6"],
    # A blur of saturated colours (a test card this script draws), as stored and in linear light.
    ["gallery", "docs/stripes.png", "docs/blur-srgb.png", "--size", "160", "--tile", "gaussian:sigma=3"],
    ["gallery", "docs/stripes.png", "docs/blur-linear.png", "--size", "160", "--tile", "gaussian:sigma=3", "--linear"],
    # A kernel and its frequency response.
    ["show", "unsharp", "-p", "amount=2", "-p", "sigma=0.8", "--plot", "docs/unsharp-kernel.png"],
]


def draw_stripes(path):
    """Vertical stripes of saturated red, green, blue and yellow: where
    two meet, a blur of the stored values darkens; one in linear light does not."""
    import numpy as np
    from PIL import Image

    colours = [(255, 0, 0), (0, 255, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0), (0, 0, 255), (255, 0, 0)]
    card = np.zeros((96, 160, 3), np.uint8)
    for index, colour in enumerate(colours):
        card[:, index * 20 : (index + 1) * 20] = colour
    Image.fromarray(card).save(path)


def main():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    draw_stripes(DOCS / "stripes.png")
    for args in COMMANDS:
        print("imgconv " + " ".join(shlex.quote(a) for a in args))
        subprocess.run([sys.executable, "-m", "imgconv", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    for path in sorted(DOCS.glob("*.png")):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
