"""Chains (several filters, one decode and one encode), --repeat, --strength,
the catalog's combiners beyond the magnitude, stdin/stdout and completion."""

import io as stdio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import scipy_convolve

import imgconv
from imgconv.kernels import Filter, Kernel, load_catalog
from imgconv.chain import Chain, apply_chain, compose, parse_chain, split_chain
from imgconv.pipeline import Job, filter_image
from imgconv.cli import cli
from imgconv.errors import CatalogError, KernelFileError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(use_env=False)


def run(*args, input=None, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def one_line_error(result, code):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1
    return lines[0]


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.open(SAMPLES / "chelsea.png").crop((150, 60, 246, 132)).save(path)
    return path


def kernel_filter(matrix, **options):
    return Filter("k", "test", {}, (Kernel(np.asarray(matrix, float)),), options.get("combine", "single"), options.get("bias", 0.0), options.get("out_range", "clip"))


# ---------------------------------------------------------------------------
# syntax


def test_steps_and_their_parameters(catalog):
    chain = parse_chain("gaussian:sigma=2,radius=6,sharpen", catalog)
    assert [s.filter.name for s in chain.steps] == ["gaussian", "sharpen"]
    assert dict(chain.steps[0].filter.params) == {"sigma": 2.0, "radius": 6}
    same = parse_chain(["gaussian:sigma=2:radius=6", "sharpen"], catalog)
    assert same.filters == chain.filters
    assert parse_chain("smooth", catalog).steps[0].filter.name == "blur"  # aliases


def test_inline_and_file_steps(catalog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edge.csv").write_text("1,0,-1\n")
    chain = parse_chain("[1, 2, 1]:normalize=true,@edge.csv:scale=2,blur", catalog)
    assert len(chain.steps) == 3
    np.testing.assert_allclose(chain.steps[0].filter.kernels[0].matrix, [[0.25, 0.5, 0.25]])
    np.testing.assert_array_equal(chain.steps[1].filter.kernels[0].matrix, [[2, 0, -2]])
    assert chain.steps[1].loaded.format == "text"
    assert split_chain("a,[1,2;3,4],b") == ["a", "[1,2;3,4]", "b"]


def test_params_with_p(catalog):
    chain = parse_chain("gaussian", catalog, params=["sigma=3"])
    assert chain.steps[0].filter.params["sigma"] == 3.0
    chain = parse_chain("gaussian:radius=4", catalog, params=["sigma=3"])
    assert dict(chain.steps[0].filter.params) == {"sigma": 3.0, "radius": 4}


@pytest.mark.parametrize(
    "texts, kwargs, message",
    [
        ("", {}, "empty chain"),
        ("blur,,sharpen", {}, "empty step"),
        ("blur,", {}, "empty step"),
        ("sharpn", {}, "did you mean 'sharpen'"),
        ("blur,sharpn", {}, "step 2 of the chain: unknown kernel 'sharpn'"),
        ("gaussian:sigma=-1", {}, "parameter 'sigma' must be a number from 0.1 to 127"),
        ("gaussian:sigma", {}, "expected KEY=VALUE"),
        (":sigma=1", {}, "a filter name must come before ':'"),
        ("[1 2 1", {}, "without its closing ']'"),
        ("[1 2 1]x", {}, "expected ':KEY=VALUE' after ']'"),
        ("[1 2 1]:sigma=2", {}, "a kernel step takes normalize, scale"),
        ("[1 -1]:normalize=true", {}, "sums to 0"),
        ("[1 2]:normalize=maybe", {}, "normalize must be true or false"),
        ("[1 2]:scale=inf", {}, "scale must be a finite number"),
        ("[1 2; 3]", {}, "row 2 has 1 values"),
        ("@", {}, "'@' must be followed by a kernel file name"),
        ("@missing.mat", {}, "kernel file 'missing.mat' not found"),
        ("blur,sharpen", {"params": ["sigma=2"]}, "-p applies to a single catalog filter"),
        ("gaussian:sigma=2", {"params": ["sigma=3"]}, "parameter 'sigma' given twice"),
        ([], {}, "no filter given"),
    ],
)
def test_bad_chains(catalog, texts, kwargs, message):
    with pytest.raises(CatalogError) as info:
        parse_chain(texts, catalog, **kwargs)
    assert message in str(info.value)


def test_broken_kernel_file_is_a_file_error(catalog, tmp_path):
    (tmp_path / "bad.mat").write_text("2 2\n1 2\n")
    with pytest.raises(KernelFileError, match="bad.mat"):
        parse_chain(f"@{tmp_path / 'bad.mat'}", catalog)


def test_chain_validation():
    flt = kernel_filter([[1]])
    for bad in ({"repeat": 0}, {"repeat": 101}, {"repeat": 1.5}, {"strength": -0.1}, {"strength": float("nan")}):
        with pytest.raises(ValueError):
            Chain((flt,), **bad)
    with pytest.raises(ValueError):
        Chain(())


# ---------------------------------------------------------------------------
# the equivalent kernel


@pytest.mark.parametrize("first, second", [((3, 3), (3, 3)), ((2, 2), (4, 4)), ((2, 3), (3, 2)), ((4, 1), (1, 5)), ((1, 1), (2, 2)), ((4, 4), (2, 2))])
def test_compose_is_convolving_twice(rng, first, second):
    image = rng.random((20, 17))
    a, b = rng.standard_normal(first), rng.standard_normal(second)
    twice = scipy_convolve(scipy_convolve(image, a, "wrap"), b, "wrap")
    once = scipy_convolve(image, compose(a, b), "wrap")
    np.testing.assert_allclose(once, twice, atol=1e-10)


def test_equivalent_kernel_with_repeat_and_strength(rng, catalog):
    chain = parse_chain("[1 2 1]:normalize=true,sharpen", catalog)
    chain = Chain(chain.steps, repeat=2, strength=0.6)
    kernel, reason = chain.equivalent()
    assert reason is None
    image = rng.random((16, 18)).astype(np.float32)
    expected = scipy_convolve(image, kernel.matrix, "wrap")
    got = apply_chain(image, chain, mode="wrap")
    np.testing.assert_allclose(got, expected, atol=2e-5)


@pytest.mark.parametrize(
    "text, out_range, reason",
    [("blur,sobel", None, "'sobel' combines 2 kernels by magnitude"), ("emboss", None, "adds a bias"), ("laplacian", None, "out-range abs"), ("blur", "normalize", "out-range normalize")],
)
def test_nonlinear_chains_have_no_equivalent(catalog, text, out_range, reason):
    kernel, why = parse_chain(text, catalog).equivalent(out_range=out_range)
    assert kernel is None and reason in why


# ---------------------------------------------------------------------------
# applying


def test_a_plain_chain_is_apply_filter(rng, catalog):
    image = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    chain = parse_chain("gaussian:sigma=1.5", catalog)
    expected = imgconv.apply_filter(image, chain.steps[0].filter)
    np.testing.assert_array_equal(apply_chain(image, chain), expected)
    np.testing.assert_array_equal(apply_chain(image, chain.steps[0].filter), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_two_steps_round_once(rng, catalog, dtype):
    top = np.iinfo(dtype).max
    image = rng.integers(0, top + 1, (15, 13), dtype=dtype)
    chain = parse_chain("sharpen,[1 2 1; 2 4 2; 1 2 1]:normalize=true", catalog)
    got = apply_chain(image, chain, mode="mirror")
    kernel = compose(chain.steps[0].filter.kernels[0].matrix, chain.steps[1].filter.kernels[0].matrix)
    # Not clipped in between: the two steps are their equivalent kernel, up to the borders.
    inside = (slice(2, -2), slice(2, -2))
    expected = np.clip(np.rint(scipy_convolve(image, kernel, "mirror")), 0, top)
    assert got.dtype == dtype
    assert np.abs(got[inside].astype(float) - expected[inside]).max() <= 1


def test_strength_blends_with_the_original(rng, catalog):
    image = rng.integers(0, 65536, (10, 11), dtype=np.uint16)
    flt = catalog.resolve("sharpen")
    np.testing.assert_array_equal(apply_chain(image, Chain((flt,), strength=0.0)), image)
    full = apply_chain(image, Chain((flt,), strength=1.0))
    np.testing.assert_array_equal(full, imgconv.apply_filter(image, flt))
    half = apply_chain(image, Chain((flt,), strength=0.5)).astype(float)
    filtered = scipy_convolve(image.astype(float), flt.kernels[0].matrix, "reflect")
    np.testing.assert_allclose(half, np.clip(np.rint(image + 0.5 * (filtered - image)), 0, 65535), atol=1)
    double = apply_chain(image.astype(np.float32) / 65535, Chain((flt,), strength=2.0))
    np.testing.assert_allclose(double, (image + 2 * (filtered - image)) / 65535, atol=1e-5)


def test_repeat_runs_the_chain_again(rng, catalog):
    image = rng.random((14, 14)).astype(np.float32)
    box = catalog.resolve("box", {"size": 3})
    thrice = apply_chain(image, Chain((box,), repeat=3), mode="wrap")
    kernel = compose(compose(box.kernels[0].matrix, box.kernels[0].matrix), box.kernels[0].matrix)
    np.testing.assert_allclose(thrice, scipy_convolve(image, kernel, "wrap"), atol=1e-5)


def test_chain_with_alpha_and_out_range_on_the_last_step(rng, catalog):
    image = rng.integers(0, 256, (9, 10, 4), dtype=np.uint8)
    image[..., 3] = 255
    chain = parse_chain("blur,sobel-x", catalog)
    got = apply_chain(image, chain, out_range="normalize")
    assert got.shape == image.shape and (got[..., 3] == 255).all()
    assert got[..., :3].min() == 0 and got[..., :3].max() == 255


def test_filter_image_runs_one_filter_and_chains(catalog, photo):
    from imgconv import io

    image = io.read_image(photo)
    plain, _ = filter_image(Job(Chain.of(catalog.resolve("sharpen"))), image)
    np.testing.assert_array_equal(plain, imgconv.apply_filter(image.pixels, "sharpen"))
    chained, _ = filter_image(Job(Chain.of(catalog.resolve("sharpen"), strength=0.0)), image)
    np.testing.assert_array_equal(chained, image.pixels)


# ---------------------------------------------------------------------------
# combiners


@pytest.mark.parametrize("combine", ["sum-abs", "max"])
def test_new_combiners(rng, combine):
    image = rng.random((13, 12)) * 255
    kernels = [rng.standard_normal((3, 3)) for _ in range(3)]
    flt = Filter("c", "test", {}, tuple(Kernel(k) for k in kernels), combine, 0.0, "clip")
    results = [scipy_convolve(image, k, "reflect") for k in kernels]
    expected = np.sum(np.abs(results), axis=0) if combine == "sum-abs" else np.max(results, axis=0)
    got = imgconv.apply_filter(image.astype(np.float32), flt)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_kirsch_and_sobel_l1_in_the_catalog(rng, catalog):
    kirsch = catalog.resolve("kirsch")
    assert kirsch.combine == "max" and len(kirsch.kernels) == 8
    step = np.zeros((10, 10), np.float32)
    step[:, 5:] = 1.0
    edges = imgconv.apply_filter(step, kirsch)
    assert edges[:, 4:6].min() == pytest.approx(0.6) and abs(edges[:, 0]).max() < 1e-6
    l1 = catalog.resolve("sobel-l1")
    assert l1.combine == "sum-abs"
    image = rng.random((8, 8)).astype(np.float32)
    gx, gy = (scipy_convolve(image, catalog.resolve(n).kernels[0].matrix, "reflect") for n in ("sobel-x", "sobel-y"))
    np.testing.assert_allclose(imgconv.apply_filter(image, l1), 0.5 * (abs(gx) + abs(gy)), atol=1e-5)


def test_catalog_accepts_the_new_combiners(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("kernels:\n  compass:\n    description: x\n    kernels: [sobel-x, sobel-y]\n    combine: max\n")
    assert load_catalog([path], use_env=False).resolve("compass").combine == "max"


# ---------------------------------------------------------------------------
# the command line


def test_apply_a_chain(photo, tmp_path, catalog):
    out = tmp_path / "out.png"
    result = run("apply", "gaussian:sigma=1.5,sharpen", photo, out)
    assert result.exit_code == 0, result.output
    pixels = np.asarray(Image.open(photo))
    expected = apply_chain(pixels, parse_chain("gaussian:sigma=1.5,sharpen", catalog))
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)
    again = tmp_path / "again.png"
    assert run("apply", "gaussian:sigma=1.5", "sharpen", photo, again).exit_code == 0
    assert again.read_bytes() == out.read_bytes()


def test_apply_with_kernel_repeat_strength(photo, tmp_path, catalog):
    out = tmp_path / "out.png"
    result = run("apply", "--kernel", "0 -1 0; -1 5 -1; 0 -1 0", photo, out, "--repeat", "2", "--strength", "0.5")
    assert result.exit_code == 0, result.output
    expected = apply_chain(np.asarray(Image.open(photo)), Chain((catalog.resolve("sharpen"),), repeat=2, strength=0.5))
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)
    result = run("apply", "-p", "sigma=2", "gaussian", photo, out, "--explain")
    assert result.exit_code == 0 and "gaussian: kernel" in result.output


def test_stdin_and_stdout(photo, tmp_path):
    data = photo.read_bytes()
    result = CliRunner().invoke(cli, ["apply", "blur", "-", "-"], input=data, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    out = Image.open(stdio.BytesIO(result.stdout_bytes))
    assert out.format == "PNG" and out.size == Image.open(photo).size  # the input's format
    expected = imgconv.apply_filter(np.asarray(Image.open(photo)), "blur")
    np.testing.assert_array_equal(np.asarray(out), expected)
    result = CliRunner().invoke(cli, ["apply", "blur", "-", "-", "--format", "jpg"], input=data, catch_exceptions=False)
    assert Image.open(stdio.BytesIO(result.stdout_bytes)).format == "JPEG"
    target = tmp_path / "named-by-format"
    result = CliRunner().invoke(cli, ["apply", "blur", "-", str(target), "--format", "webp"], input=data, catch_exceptions=False)
    assert result.exit_code == 0 and Image.open(target).format == "WEBP"
    result = CliRunner().invoke(cli, ["apply", "blur", str(photo), "-", "--format", "tif"], catch_exceptions=False)
    assert Image.open(stdio.BytesIO(result.stdout_bytes)).format == "TIFF"


def test_stdin_errors(photo):
    result = CliRunner().invoke(cli, ["apply", "blur", "-", "-"], input=b"", catch_exceptions=False)
    assert result.exit_code == 1 and "no data on standard input" in result.stderr
    result = CliRunner().invoke(cli, ["apply", "blur", "-", "-"], input=b"not an image", catch_exceptions=False)
    assert result.exit_code == 1 and "<stdin>" in result.stderr and not result.stdout_bytes


@pytest.mark.slow
def test_the_shell_pipeline():
    """The real thing: bytes through a pipe, no terminal."""
    data = (SAMPLES / "camera.png").read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "imgconv", "apply", "box", "-", "-", "--format", "png"], input=data, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(stdio.BytesIO(done.stdout)).size == (512, 512)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["apply", "{photo}", "{out}"], 2, "no filter given"),
        (["apply", "blur", "{photo}"], 2, "missing OUT"),
        (["apply", "blur"], 2, "missing OUT"),
        (["apply", "blur,,sharpen", "{photo}", "{out}"], 2, "empty step"),
        (["apply", "blur", "sharpn", "{photo}", "{out}"], 2, "did you mean 'sharpen'"),
        (["apply", "blur,sharpen", "-p", "sigma=1", "{photo}", "{out}"], 2, "-p applies to a single catalog filter"),
        (["apply", "--kernel", "1 2; 3", "{photo}", "{out}"], 2, "row 2 has 1 values"),
        (["apply", "--kernel", "nope.mat", "{photo}", "{out}"], 2, "kernel file 'nope.mat' not found"),
        (["apply", "@{bad}", "{photo}", "{out}"], 1, "the header says 3 rows, found 1"),
        (["apply", "blur", "{photo}", "{out}", "--strength", "-1"], 2, "--strength"),
        (["apply", "blur", "{photo}", "{out}", "--repeat", "0"], 2, "--repeat"),
        (["apply", "blur", "{photo}", "{out}", "--format", "xyz"], 2, "unknown image format 'xyz'"),
        (["apply", "blur", "{folder}", "{out}"], 2, "is a folder"),
        (["show", "blur,sobel", "--repeat", "2", "-p", "x=1"], 2, "-p applies"),
        (["show"], 2, "no filter given"),
        (["batch", "blur,nosuch", "{folder}", "{folder}/o"], 2, "unknown kernel 'nosuch'"),
    ],
)
def test_mistakes_are_one_line(photo, tmp_path, args, code, message):
    (tmp_path / "bad.mat").write_text("3 3\n1 2 3\n")
    names = {"photo": photo, "out": tmp_path / "out.png", "bad": tmp_path / "bad.mat", "folder": tmp_path}
    line = one_line_error(run(*[a.format(**names) for a in args]), code)
    assert message in line
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_batch_runs_a_chain(tmp_path):
    (tmp_path / "in").mkdir()
    Image.open(SAMPLES / "camera.png").resize((40, 30)).save(tmp_path / "in" / "a.png")
    result = run("batch", "blur,sharpen", tmp_path / "in", tmp_path / "out", "--strength", "0.5", "-j", "1")
    assert result.exit_code == 0, result.output
    expected = apply_chain(np.asarray(Image.open(tmp_path / "in" / "a.png")), Chain(parse_chain("blur,sharpen", load_catalog()).steps, strength=0.5))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), expected)


def test_show_a_chain_and_its_equivalent():
    result = run("show", "box:size=2,[1 1]")
    assert result.exit_code == 0, result.output
    assert "step 1 of 2: box" in result.output and "step 2 of 2: [1 1]" in result.output
    # 2x2 then 1x2: the full 2x3 sum, padded by a column so that its centre is imgconv's.
    assert "equivalent single kernel of the chain (2x4, sum 2):\n0.25  0.5  0.25  0\n0.25  0.5  0.25  0" in result.output
    result = run("show", "blur,sobel")
    assert "no single equivalent kernel for the chain: 'sobel' combines 2 kernels by magnitude" in result.output
    result = run("show", "sharpen", "--strength", "0.5")
    assert "equivalent single kernel of the chain at strength 0.5" in result.output and "-0.5   3    -0.5" in result.output


def test_show_a_kernel_file(tmp_path):
    (tmp_path / "edge.mat").write_text("3 1 2 0\n1 0 -1\n")
    result = run("show", "--kernel", tmp_path / "edge.mat")
    assert result.exit_code == 0, result.output
    assert "libvips .mat kernel 1x3" in result.output and "turned by 180 degrees" in result.output
    assert "as written (libvips .mat, 1x3):\n1  0  -1" in result.output
    assert "impulse response (1x3, sum 0, centre at row 1, column 2):\n-0.5  0  0.5" in result.output


# ---------------------------------------------------------------------------
# shell completion


def complete(words, incomplete):
    from click.shell_completion import ShellComplete

    return [item.value for item in ShellComplete(cli, {}, "imgconv", "_IMGCONV_COMPLETE").get_completions(words, incomplete)]


def test_completion_of_names_and_parameters():
    assert "gaussian" in complete(["apply"], "gau") and "gauss" in complete(["apply"], "gau")
    assert complete(["apply"], "blur,sharp") == ["blur,sharpen"]
    assert set(complete(["show"], "gaussian:")) == {"gaussian:sigma=", "gaussian:radius="}
    assert complete(["show"], "blur,gaussian:sigma=2:r") == ["blur,gaussian:sigma=2:radius="]
    assert complete(["apply", "gaussian", "-p"], "si") == ["sigma="]
    assert complete(["batch", "-p"], "") == [] and complete(["show", "blur", "-p"], "") == ["sigma=", "radius="]
    assert complete(["batch"], "sob") == ["sobel", "sobel-l1", "sobel-x", "sobel-y"]
    assert complete(["gallery", "in.png", "out.png", "--kernels"], "emb") == ["emboss"]
    assert complete(["show"], "nosuch:") == [] and complete(["show"], "@") == []


@pytest.mark.slow
def test_completion_script_and_no_numba():
    code = (
        "import os, sys; os.environ.update(_IMGCONV_COMPLETE='bash_complete', COMP_WORDS='imgconv apply shar', COMP_CWORD='2')\n"
        "from imgconv.cli import cli\n"
        "try:\n    cli(prog_name='imgconv')\nexcept SystemExit:\n    pass\n"
        "assert 'numba' not in sys.modules, 'numba was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "plain,sharpen" in done.stdout
