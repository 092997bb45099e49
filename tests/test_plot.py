"""Pictures: `show --plot` (a kernel beside its frequency response) and
`gallery` (a labelled contact sheet), drawn with Pillow, no numba for show."""

import io as stdio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from imgconv import plot
from imgconv.cli import cli

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def run(*args, **kwargs):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)
    assert "Traceback" not in result.output
    return result


def ink(array):
    """How many pixels are not the white background."""
    return int(np.count_nonzero(np.any(np.asarray(array)[..., :3] < 250, axis=-1)))


# ---------------------------------------------------------------------------
# the kernel picture


def test_frequency_response_of_a_box():
    box = np.full((3, 3), 1 / 9)
    response = plot.frequency_response(box, size=64)
    assert response.shape == (64, 64)
    assert response[32, 32] == pytest.approx(1.0)  # zero frequency in the middle: the sum
    np.testing.assert_allclose(response, response[::-1, ::-1][np.r_[-1, 0:63]][:, np.r_[-1, 0:63]], atol=1e-12)
    assert plot.frequency_response(np.ones((1, 300))).shape[0] >= 300


def test_kernel_picture_rows_and_labels():
    one = plot.kernel_picture("sharpen", [("kernel", [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])])
    two = plot.kernel_picture("sobel", [("kernel 1 of 2", np.eye(3)), ("kernel 2 of 2", -np.eye(3))], notes=["combined by magnitude"])
    assert one.dtype == np.uint8 and one.ndim == 3 and one.shape[2] == 3
    assert one.shape[1] == two.shape[1] and two.shape[0] > one.shape[0] + plot.PANEL
    # A 3x3 kernel is drawn as cells with its values written in them: dark ink inside red/blue/white cells.
    assert ink(one) > 0.3 * one.shape[0] * one.shape[1] / 2
    eight = plot.kernel_picture("kirsch", [(f"k{i}", np.eye(3)) for i in range(8)])
    twelve = plot.kernel_picture("kirsch", [(f"k{i}", np.eye(3)) for i in range(12)])
    assert eight.shape[0] < twelve.shape[0] <= eight.shape[0] + 40  # at most MAX_ROWS drawn, and a note


def test_show_plot_writes_a_png(tmp_path):
    out = tmp_path / "gauss.png"
    result = run("show", "gaussian", "-p", "sigma=2", "--plot", out)
    assert result.exit_code == 0, result.output
    assert "sigma=2" in result.output  # the text is printed too
    picture = Image.open(out)
    assert picture.format == "PNG" and picture.mode == "RGB" and picture.width > 2 * plot.PANEL


@pytest.mark.parametrize(
    "args",
    [
        ["sobel"],  # two kernels
        ["kirsch"],  # eight
        ["gaussian:sigma=1,sharpen"],  # a linear chain: its equivalent kernel
        ["blur,sobel"],  # not linear: each kernel
        ["gaussian", "-p", "sigma=40"],  # 321x321, drawn scaled down
        ["--kernel", "3x3: 1 2 3 4 5 6 7 8 9"],
        ["sharpen", "--repeat", "2", "--strength", "0.5"],
    ],
)
def test_show_plot_of_every_kind(tmp_path, args):
    out = tmp_path / "k.png"
    result = run("show", *args, "--plot", out)
    assert result.exit_code == 0, result.output
    assert ink(Image.open(out).convert("RGB")) > 10000


def test_show_plot_to_stdout_is_only_the_picture():
    result = CliRunner().invoke(cli, ["show", "sharpen", "--plot", "-"], catch_exceptions=False)
    assert result.exit_code == 0
    assert Image.open(stdio.BytesIO(result.stdout_bytes)).format == "PNG"


def test_show_plot_bad_extension():
    result = run("show", "sharpen", "--plot", "k.xyz")
    assert result.exit_code == 2 and ".xyz" in result.output


@pytest.mark.slow
def test_show_plot_does_not_import_numba(tmp_path):
    code = (
        "import sys; from imgconv.cli import main; sys.argv = ['imgconv'] + sys.argv[1:]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "assert 'numba' not in sys.modules, 'numba was imported'\nsys.exit(code)"
    )
    args = ["show", "gaussian:sigma=2,sharpen", "--plot", str(tmp_path / "p.png")]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.png").exists()


# ---------------------------------------------------------------------------
# contact sheets


def test_to_display_handles_every_layout(rng):
    grey16 = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
    assert plot.to_display(grey16).shape == (5, 6, 3)
    assert (plot.to_display(np.full((2, 2), 2.0, np.float32)) == 255).all()
    transparent = np.zeros((16, 16, 4), np.uint8)
    shown = plot.to_display(transparent)
    assert set(np.unique(shown)) == {153, 204}  # the checkerboard shows through
    assert plot.to_display(np.zeros((3, 3, 2), np.uint8)).shape == (3, 3, 3)


def test_thumbnail_scales_down_only(rng):
    image = rng.integers(0, 256, (300, 200, 4), dtype=np.uint8)
    small = plot.thumbnail(image, 100)
    assert small.shape == (100, 67, 4) and small.dtype == np.float32 and 0 <= small.min() and small.max() <= 1
    assert plot.thumbnail(image[:50, :40, 0], 100).shape == (50, 40)


def test_contact_sheet_layout():
    tiles = [(f"tile {i}", np.zeros((30, 40, 3), np.uint8)) for i in range(5)]
    sheet = plot.contact_sheet(tiles, columns=2, size=40, title="five")
    assert sheet.shape[1] < 2 * 80 + 60 and sheet.shape[0] > 3 * 30
    wide = plot.contact_sheet(tiles, size=40)
    assert wide.shape[1] > sheet.shape[1]  # 3 columns by default
    with pytest.raises(ValueError):
        plot.contact_sheet([])


@pytest.fixture
def small_photo(tmp_path):
    path = tmp_path / "cat.png"
    Image.open(SAMPLES / "chelsea.png").resize((90, 60)).save(path)
    return path


def test_gallery_of_chosen_filters(small_photo, tmp_path):
    out = tmp_path / "sheet.png"
    result = run("gallery", small_photo, out, "-k", "blur,sharpen,gaussian:sigma=3,[1 0 -1]", "--tile", "blur,sobel", "--size", "64", "--columns", "3")
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(out))
    # original + 4 tiles + 1 chain tile = 6 tiles in 3 columns: 2 rows of 64-wide images.
    assert 3 * 64 < sheet.shape[1] < 3 * 64 + 80
    assert 2 * 40 < sheet.shape[0] < 2 * (43 + 40) + 60


def test_gallery_of_the_whole_catalog(small_photo, tmp_path):
    out = tmp_path / "all.png"
    result = run("gallery", small_photo, out, "--size", "48", "--linear", "--mode", "mirror")
    assert result.exit_code == 0, result.output
    assert ink(Image.open(out)) > 20 * 48 * 32 * 0.5


def test_gallery_of_rgba_and_16_bit(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (255, 0, 0, 255)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    deep = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    for name in ("a.png", "d.png"):
        result = run("gallery", tmp_path / name, tmp_path / f"sheet-{name}", "-k", "blur,sobel")
        assert result.exit_code == 0, result.output


def test_gallery_from_stdin_to_stdout(small_photo):
    result = CliRunner().invoke(cli, ["gallery", "-", "-", "-k", "sharpen"], input=small_photo.read_bytes(), catch_exceptions=False)
    assert result.exit_code == 0
    assert Image.open(stdio.BytesIO(result.stdout_bytes)).format == "PNG"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-k", "blur,nosuch"], 2, "unknown kernel 'nosuch'"),
        (["--tile", ""], 2, "empty chain"),
        (["--size", "8"], 2, "--size"),
        (["--format", "xyz"], 2, "unknown image format"),
    ],
)
def test_gallery_mistakes(small_photo, tmp_path, args, code, message):
    result = run("gallery", small_photo, tmp_path / "s.png", *args)
    assert result.exit_code == code and message in result.output
    assert not (tmp_path / "s.png").exists()


def test_gallery_missing_input(tmp_path):
    result = run("gallery", tmp_path / "none.png", tmp_path / "s.png")
    assert result.exit_code == 2 and "none.png" in result.output
