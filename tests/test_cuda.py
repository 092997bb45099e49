"""The CUDA backend against the same scipy reference as the CPU backend, and against the CPU itself.

These tests run wherever a CUDA device answers: on a real GPU (unpatched, with
larger images too), or under numba's CUDA simulator.  Without a GPU,
``test_cuda_simulator.py`` runs this file in a child process with
``NUMBA_ENABLE_CUDASIM=1`` (the simulator must be on before numba is imported);
in the parent process this file is reported as skipped, saying so.

Under the simulator the block size is patched to 4 x 4 so the small images
(13 x 11, whose sizes fill no whole block) span several blocks.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODES, assert_close_to_reference

import imgconv
from imgconv import tunables
from imgconv.engine import cpu
from imgconv.engine.plan import cuda_unavailable_reason, make_plan

WHY_NOT = cuda_unavailable_reason()
if WHY_NOT is not None:
    pytest.skip(
        f"no CUDA device in this process ({WHY_NOT}); test_cuda_simulator.py runs this file under NUMBA_ENABLE_CUDASIM=1",
        allow_module_level=True,
    )

from imgconv.engine import cuda as gpu  # noqa: E402

SIMULATOR = gpu.SIMULATOR

if SIMULATOR:
    # The simulator runs every CUDA thread as a Python thread, with a manager
    # thread polling them; a short switch interval roughly halves its time.
    sys.setswitchinterval(2e-4)
    IMAGE_SHAPES = [(13, 11)]
else:
    IMAGE_SHAPES = [(13, 11), (70, 45)]  # the larger spans several default blocks

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    if SIMULATOR:
        monkeypatch.setattr(tunables, "CUDA_BLOCK", (4, 4))


def on_gpu(image, kernel, **options):
    result, plan = imgconv.convolve(image, kernel, backend="cuda", explain=True, **options)
    assert plan.backend == "cuda"
    return result


@pytest.mark.parametrize("mode", MODES)
def test_direct_matches_scipy_and_the_cpu_bit_for_bit(rng, mode):
    for kshape in [(3, 3), (2, 4), (1, 5), (4, 1)]:
        kernel = rng.normal(size=kshape)
        kernel[0, 0] = 0.0  # a zero tap: skipped on both backends
        for shape in IMAGE_SHAPES:
            image = (rng.random(shape) * 255).astype(np.float32)
            cval = float(rng.normal() * 50)
            got = on_gpu(image, kernel, mode=mode, cval=cval, strategy="direct")
            assert_close_to_reference(got, image, kernel, mode, cval)
            np.testing.assert_array_equal(got, imgconv.convolve(image, kernel, mode=mode, cval=cval, backend="cpu", strategy="direct"))


@pytest.mark.parametrize("mode", MODES)
def test_every_cpu_sweep_matches_bit_for_bit(rng, mode, monkeypatch):
    # The CPU's fused sweeps (9, 13, 17, 25 taps), its two-rows-a-sweep pairs (dense
    # 3x3 and 5x5, one column, the separable column pass) and float32 rows read in
    # place all keep the one order the GPU sums in.
    monkeypatch.setattr(tunables, "CPU_IN_PLACE_EDGE_WORK", float("inf"))
    shape = IMAGE_SHAPES[-1]
    image = (rng.random(shape) * 255).astype(np.float32)
    cval = float(rng.normal() * 50)
    for kshape in [(3, 3), (5, 5), (13, 1), (1, 17), (3, 5)]:
        kernel = rng.normal(size=kshape)
        got = on_gpu(image, kernel, mode=mode, cval=cval, strategy="direct")
        np.testing.assert_array_equal(got, imgconv.convolve(image, kernel, mode=mode, cval=cval, backend="cpu", strategy="direct"))
    kernel = np.outer(rng.normal(size=13), rng.normal(size=9))
    for source in (image, image.astype(np.uint8)):
        got = on_gpu(source, kernel, mode=mode, cval=cval, strategy="separable")
        np.testing.assert_array_equal(got, imgconv.convolve(source, kernel, mode=mode, cval=cval, backend="cpu", strategy="separable"))


@pytest.mark.parametrize("mode", MODES)
def test_kernel_larger_than_the_image(rng, mode):
    image = rng.random((3, 2))
    kernel = rng.normal(size=(9, 7))
    got = on_gpu(image, kernel, mode=mode, cval=-1.5, strategy="direct")
    assert_close_to_reference(got, image, kernel, mode, -1.5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rank", [1, 2])
def test_separable_matches_scipy_and_the_cpu(rng, mode, rank):
    kernel = sum(np.outer(rng.normal(size=5), rng.normal(size=4)) for _ in range(rank))
    image = (rng.random(IMAGE_SHAPES[0]) * 255).astype(np.uint8)
    got, plan = imgconv.convolve(image, kernel, mode=mode, cval=2.0, backend="cuda", strategy="separable", explain=True)
    assert plan.strategy == "separable" and len(plan.factors) == rank
    assert_close_to_reference(got, image, kernel, mode, 2.0)
    cpu_result = imgconv.convolve(image, kernel, mode=mode, cval=2.0, backend="cpu", strategy="separable")
    np.testing.assert_array_equal(got, cpu_result)


@pytest.mark.parametrize("mode", MODES)
def test_large_kernels_run_in_chunks(rng, mode, monkeypatch):
    # A shared-memory budget this small cuts a 6x7 kernel into chunks of at most
    # 2x2 taps; rows and columns of zeros leave chunks empty or narrower.
    monkeypatch.setattr(tunables, "CUDA_SHARED_BYTES", 4 * (2 * 4 + 5 * 8) if SIMULATOR else 4096)
    kernel = rng.normal(size=(6, 7))
    kernel[1:3, :] = 0.0
    kernel[:, 4] = 0.0
    image = rng.random((7, 5, 2)).astype(np.float32)
    taps = gpu._workspace.prepared(kernel[::-1, ::-1], 2, tunables.CUDA_BLOCK, True)
    assert taps.count > 1
    got = on_gpu(image, kernel, mode=mode, cval=0.5, strategy="direct")
    assert_close_to_reference(got, image, kernel, mode, 0.5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float64, np.int16])
def test_dtypes_and_interleaved_channels(rng, dtype):
    channels = {np.uint8: 3, np.uint16: 1, np.float64: 2, np.int16: 1}[dtype]
    shape = (9, 7, channels) if channels > 1 else (9, 7)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        image = rng.random(shape).astype(dtype)
    kernel = rng.normal(size=(3, 2))
    got = on_gpu(image, kernel, mode="wrap", strategy="direct")
    assert_close_to_reference(got, image, kernel, "wrap")
    np.testing.assert_array_equal(got, imgconv.convolve(image, kernel, mode="wrap", backend="cpu", strategy="direct"))


def test_all_zero_kernel_gives_zeros(rng):
    got = on_gpu(rng.random((5, 6)), np.zeros((3, 3)), strategy="direct")
    np.testing.assert_array_equal(got, np.zeros((5, 6), np.float32))


@pytest.mark.parametrize("name, params", [("sharpen", {}), ("gaussian", {"sigma": 1.0}), ("sobel", {}), ("emboss", {})])
def test_sample_photographs_round_to_the_cpu_pixels_exactly(name, params):
    from PIL import Image

    # A crop of a real photograph (an RGB one, and a grey one with alpha added).
    rgb = np.asarray(Image.open(SAMPLES / "astronaut.png").convert("RGB"))[100:109, 200:207]
    grey = np.asarray(Image.open(SAMPLES / "camera.png").convert("L"))[50:59, 60:67]
    grey_alpha = np.dstack([grey, np.linspace(0, 255, grey.size).reshape(grey.shape).astype(np.uint8)])
    for image in (rgb, grey_alpha):
        got = imgconv.apply_filter(image, name, backend="cuda", **params)
        want = imgconv.apply_filter(image, name, backend="cpu", **params)
        assert got.dtype == image.dtype
        np.testing.assert_array_equal(got, want)


def test_plans_on_the_gpu():
    gaussian = imgconv.load_catalog().resolve("gaussian", {"sigma": 3.0}).kernels[0]
    plan = make_plan(gaussian.matrix, (100, 100), backend="cuda", factors=gaussian.factors)
    assert (plan.strategy, plan.backend) == ("separable", "cuda")
    rng = np.random.default_rng(0)
    for shape in [(3, 3), (31, 31), (101, 101)]:  # large kernels run tiled on the GPU, never by FFT
        plan = make_plan(rng.normal(size=shape), (100, 100), backend="cuda")
        assert (plan.strategy, plan.backend) == ("direct", "cuda")
        assert "unmeasured" in plan.explain()
    with pytest.raises(ValueError, match="'fft' runs on the CPU only"):
        make_plan(np.ones((3, 3)), (100, 100), backend="cuda", strategy="fft")


@pytest.mark.skipif(not SIMULATOR, reason="only under the simulator")
def test_auto_never_chooses_the_simulator():
    assert make_plan(np.ones((3, 3)), (8192, 8192, 3), backend="auto").backend == "cpu"


def test_device_buffers_and_taps_are_kept_between_images(rng):
    kernel = rng.normal(size=(3, 3))
    image = rng.random((6, 5)).astype(np.float32)
    on_gpu(image, kernel, strategy="direct")
    src, out = gpu._workspace.buffers["src"], gpu._workspace.buffers["out"]
    taps = dict(gpu._workspace.taps)
    on_gpu(image + 1, kernel, strategy="direct")
    assert gpu._workspace.buffers["src"] is src and gpu._workspace.buffers["out"] is out
    assert dict(gpu._workspace.taps) == taps  # the same prepared taps, not new ones
    on_gpu(rng.random((4, 5)).astype(np.float32), kernel, strategy="direct")
    assert gpu._workspace.buffers["src"] is not src  # another size: replaced, not accumulated
    assert len(gpu._workspace.buffers) <= 3


def test_cli_apply_with_backend_cuda(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from imgconv.cli import cli

    path = tmp_path / "in.png"
    Image.open(SAMPLES / "coffee.png").convert("RGB").crop((120, 80, 127, 88)).save(path)
    outputs = {}
    for backend in ("cpu", "cuda"):
        out = tmp_path / f"{backend}.png"
        result = CliRunner().invoke(cli, ["apply", "sharpen", str(path), str(out), "--backend", backend, "--explain"])
        assert result.exit_code == 0, result.output
        assert f"on {backend}" in result.output
        outputs[backend] = np.asarray(Image.open(out))
    np.testing.assert_array_equal(outputs["cuda"], outputs["cpu"])


@pytest.mark.skipif(not BENCH.exists(), reason="bench/gpu.py is not in this tree (an sdist)")
def test_bench_script_runs(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(tunables, "CUDA_BLOCK", tunables.CUDA_BLOCK)  # --block changes it: restore after
    args = ["--size", "12" if SIMULATOR else "256", "--repeat", "1", "--cases", "3x3,gauss13"]
    assert bench.main(args + (["--block", "4x4"] if SIMULATOR else [])) == 0
    output = capsys.readouterr().out
    assert "device-to-device copy" in output and "| 3x3 | direct |" in output and "| gauss13 | separable |" in output
