"""The command line, through Click's CliRunner and as the installed command."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import MODES, scipy_convolve

from imgconv.cli import cli

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
USER_CATALOG = """\
kernels:
  tilted:
    description: An asymmetric user kernel
    matrix:
      - [1, 2, 0, -1]
      - [0, 3, 1, 0]
      - [-2, 0, 1, 1]
    scale: 0.25
"""


def run(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def photo(tmp_path):
    """A small real photograph (a crop of samples/astronaut.png) in a scratch folder."""
    path = tmp_path / "photo.png"
    Image.open(SAMPLES / "astronaut.png").crop((100, 60, 260, 180)).save(path)
    return path


def test_list_shows_names_descriptions_and_parameters():
    result = run("list")
    assert result.exit_code == 0
    for name in ("identity", "blur", "gaussian", "sharpen", "sobel", "emboss", "motion-blur"):
        assert name in result.output
    assert "sigma=" in result.output


def test_show_prints_a_matrix():
    result = run("show", "sharpen")
    assert result.exit_code == 0
    assert "-1" in result.output and "5" in result.output
    result = run("show", "gaussian", "-p", "sigma=0.5")
    assert result.exit_code == 0 and "sigma=0.5" in result.output


def test_unknown_kernel_suggests_close_names():
    result = run("show", "sharpn")
    assert result.exit_code == 2
    assert "did you mean 'sharpen'" in result.output


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["-p", "sigma=-1"], "sigma"),
        (["-p", "sigmaa=1"], "sigmaa"),
        (["-p", "sigma"], "KEY=VALUE"),
        (["-p", "sigma=abc"], "sigma"),
    ],
)
def test_bad_parameters_are_usage_errors(photo, tmp_path, args, culprit):
    out = tmp_path / "out.png"
    result = run("apply", "gaussian", photo, out, *args)
    assert result.exit_code == 2 and culprit in result.output
    assert not out.exists()


def test_apply_writes_the_filtered_image(photo, tmp_path):
    import imgconv

    out = tmp_path / "out.png"
    result = run("apply", "sharpen", photo, out)
    assert result.exit_code == 0, result.output
    expected = imgconv.apply_filter(np.asarray(Image.open(photo)), "sharpen")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)


@pytest.mark.parametrize("mode", MODES)
def test_user_kernel_on_a_photograph_matches_scipy(photo, tmp_path, mode):
    catalog = tmp_path / "mine.yaml"
    catalog.write_text(USER_CATALOG)
    out = tmp_path / "out.png"
    result = run("--catalog", catalog, "apply", "tilted", photo, out, "--mode", mode, "--cval", "90")
    assert result.exit_code == 0, result.output
    source = np.asarray(Image.open(photo)).astype(np.float64)
    kernel = 0.25 * np.array([[1, 2, 0, -1], [0, 3, 1, 0], [-2, 0, 1, 1]], dtype=np.float64)
    expected = np.clip(np.rint(scipy_convolve(source, kernel, mode, 90.0)), 0, 255)
    assert np.abs(np.asarray(Image.open(out)).astype(np.float64) - expected).max() <= 1


def test_catalog_from_environment(photo, tmp_path):
    catalog = tmp_path / "env.yaml"
    catalog.write_text(USER_CATALOG)
    result = run("show", "tilted", env={"IMGCONV_CATALOG": str(catalog)})
    assert result.exit_code == 0 and "tilted" in result.output


def test_broken_catalog_names_the_file(tmp_path):
    catalog = tmp_path / "broken.yaml"
    catalog.write_text("kernels:\n  x: [unclosed\n")
    result = run("--catalog", catalog, "list")
    assert result.exit_code == 1
    assert "broken.yaml" in result.output and len(result.output.strip().splitlines()) == 1


def test_unknown_output_extension_is_refused_before_work(photo, tmp_path):
    out = tmp_path / "out.xyz"
    result = run("apply", "blur", photo, out)
    assert result.exit_code == 2 and ".xyz" in result.output
    assert not out.exists()


def test_missing_input_is_a_usage_error(tmp_path):
    result = run("apply", "blur", tmp_path / "nope.png", tmp_path / "out.png")
    assert result.exit_code == 2 and "nope.png" in result.output


def test_unreadable_image_is_one_line_and_no_output(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    out = tmp_path / "out.png"
    result = run("apply", "blur", bad, out)
    assert result.exit_code == 1
    assert "bad.png" in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [bad]


def test_output_may_be_the_input(photo):
    before = np.asarray(Image.open(photo)).copy()
    result = run("apply", "blur", photo, photo)
    assert result.exit_code == 0
    after = np.asarray(Image.open(photo))
    assert after.shape == before.shape and not np.array_equal(after, before)


def test_cuda_backend_without_gpu_is_a_clear_error(photo, tmp_path):
    from imgconv.engine.plan import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("a CUDA device (or numba's simulator) is present: test_cuda.py runs the backend")
    result = run("apply", "blur", photo, tmp_path / "o.png", "--backend", "cuda")
    assert result.exit_code == 1 and "--backend cpu" in result.output and "imgconv[cuda12]" in result.output
    assert not (tmp_path / "o.png").exists()


def test_explain_names_the_strategy(photo, tmp_path):
    result = run("apply", "gaussian", photo, tmp_path / "o.png", "-p", "sigma=2", "--explain")
    assert result.exit_code == 0 and "separable on cpu" in result.output


def test_bad_mode_is_a_usage_error(photo, tmp_path):
    result = run("apply", "blur", photo, tmp_path / "o.png", "--mode", "mirorr")
    assert result.exit_code == 2 and "mirorr" in result.output


# The batch command is tested in test_batch.py.


NO_NUMBA = (
    "import sys; from imgconv.cli import main; sys.argv = ['imgconv'] + sys.argv[1:]\n"
    "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
    "assert 'numba' not in sys.modules, 'numba was imported'\nsys.exit(code)"
)


@pytest.mark.parametrize("args", [["list"], ["show", "gaussian"], ["--help"], ["apply", "--help"], ["batch", "--help"]])
@pytest.mark.slow
def test_fast_commands_do_not_import_numba(args):
    result = subprocess.run([sys.executable, "-c", NO_NUMBA, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# Ctrl-C while Click parses the arguments (the first instants of every command).
INTERRUPTED_WHILE_PARSING = (
    "import os, signal, sys\n"
    "from imgconv import cli\n"
    "if sys.argv[1] == 'ignored':\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "parse = cli.cli.parse_args\n"
    "def interrupted(ctx, args):\n    os.kill(os.getpid(), signal.SIGINT)\n    return parse(ctx, args)\n"
    "cli.cli.parse_args = interrupted\n"
    "sys.argv = ['imgconv', 'list']\n"
    "cli.main()\n"
)


@pytest.mark.parametrize("disposition", ["default", "ignored"])
def test_ctrl_c_while_parsing_exits_130_unless_ignored(disposition):
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_WHILE_PARSING, disposition], capture_output=True, text=True, timeout=60)
    if disposition == "ignored":
        assert done.returncode == 0 and "gaussian" in done.stdout, done.stderr
    else:
        assert (done.returncode, done.stderr.strip(), done.stdout) == (130, "interrupted", "")


def test_a_started_command_gets_keyboard_interrupt_back(monkeypatch):
    """Once a command runs, Ctrl-C is Python's KeyboardInterrupt again: the command's
    own handling removes its temporaries (and batch stops its workers)."""
    import signal

    from imgconv import cli as cli_module

    seen, catalog = [], cli_module._catalog
    monkeypatch.setattr(cli_module, "_catalog", lambda ctx: seen.append(signal.getsignal(signal.SIGINT)) or catalog(ctx))
    with cli_module._interrupts_until_a_command_starts():
        assert signal.getsignal(signal.SIGINT) is cli_module._interrupted_while_starting
        assert CliRunner().invoke(cli, ["list"]).exit_code == 0
    assert seen == [signal.default_int_handler] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def installed_command():
    script = Path(sys.executable).parent / "imgconv"
    return str(script) if script.exists() else shutil.which("imgconv")


@pytest.mark.skipif(installed_command() is None, reason="the imgconv command is not installed in this environment")
@pytest.mark.slow
def test_installed_command_end_to_end(photo, tmp_path):
    command = installed_command()
    env = dict(os.environ)
    listing = subprocess.run([command, "list"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert listing.returncode == 0 and "gaussian" in listing.stdout
    out = tmp_path / "out.jpg"
    done = subprocess.run([command, "apply", "gaussian", "-p", "sigma=1.5", str(photo), str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == Image.open(photo).size
    bad = subprocess.run([command, "apply", "nosuch", str(photo), str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "imgconv", "list"], capture_output=True, text=True)
    assert result.returncode == 0 and "sharpen" in result.stdout


def test_too_many_threads_is_a_usage_error(photo, tmp_path):
    out = tmp_path / "o.png"
    result = run("apply", "blur", photo, out, "--threads", "100000")
    assert result.exit_code == 2 and "--threads" in result.output and "NUMBA_NUM_THREADS" in result.output
    assert not out.exists()
