"""``imgconv batch`` and ``imgconv.batch.run_batch``: workers, resuming, reports,
patterns, formats, containment, failure isolation (a crashing worker too),
Ctrl-C, the progress bar, and Dask.

Every run here starts real worker processes (spawned in this process, which has
run parallel kernels: about a second each; forked in the subprocess runs), so
the trees are small and most runs use one or two workers.
"""

import json
import os
import pickle
import pty
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from imgconv import batch
from imgconv.batch import FileResult, Job, run_batch
from imgconv.cli import cli

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
REPO = SAMPLES.parent


def run(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def outputs(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


def make_tree(root):
    (root / "sub" / "deeper").mkdir(parents=True)
    base = Image.open(SAMPLES / "camera.png").resize((64, 48))
    base.save(root / "a.png")
    base.convert("RGB").save(root / "sub" / "b.jpg")
    base.save(root / "sub" / "deeper" / "c.tif")
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


@pytest.fixture(scope="module")
def blur_job():
    from imgconv.chain import Chain
    from imgconv.kernels import load_catalog

    return Job(Chain.of(load_catalog().resolve("blur", {})))


@pytest.fixture(scope="module", autouse=True)
def warm_kernels(tmp_path_factory, blur_job):
    """Compile the kernels these tests run once, here, into the test run's numba
    cache, rather than in every worker process at the same time."""
    folder = tmp_path_factory.mktemp("warm")
    base = Image.open(SAMPLES / "astronaut.png").resize((40, 30))
    for name, image in (("l.png", base.convert("L")), ("rgb.jpg", base), ("rgba.png", base.convert("RGBA"))):
        image.save(folder / name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the sample's RGB ICC profile on a grey output
            batch.filter_file(blur_job, folder / name, folder / f"out-{name}")


def photos(folder, count, size=(96, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.open(SAMPLES / "astronaut.png")
    for index in range(count):
        base.crop((index, index, index + size[0], index + size[1])).save(folder / f"p{index:03d}.png")
    return folder


# ---------------------------------------------------------------------------
# the command


@pytest.mark.slow
def test_batch_mirrors_the_tree_and_reports(tmp_path):
    make_tree(tmp_path / "in")
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--jobs", "2")
    assert result.exit_code == 1
    assert "failed: " in result.output and "broken.png" in result.output
    assert "3 done, 1 skipped (not images), 1 failed in " in result.output and "images/s" in result.output
    assert outputs(tmp_path / "out") == ["a.png", "sub/b.jpg", "sub/deeper/c.tif"]
    for name in outputs(tmp_path / "out"):  # the same pixels as filtering the file alone
        import imgconv

        with Image.open(tmp_path / "in" / name) as im:
            expected = imgconv.apply_filter(np.asarray(im), "blur")
        if not name.endswith(".jpg"):
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / name)), expected)


@pytest.mark.slow
def test_batch_all_good_exits_zero_and_ignores_its_own_output_folder(tmp_path):
    make_tree(tmp_path / "in")
    (tmp_path / "in" / "sub" / "broken.png").unlink()
    result = run("batch", "blur", tmp_path / "in", tmp_path / "in" / "out", "-j", "1")
    assert result.exit_code == 0, result.output
    again = run("batch", "blur", tmp_path / "in", tmp_path / "in" / "out", "-j", "1")
    assert again.exit_code == 0 and "0 done, 3 skipped (output exists), 1 skipped (not images), 0 failed" in again.output


def test_batch_into_its_own_input_folder_is_refused(tmp_path):
    make_tree(tmp_path / "in")
    result = run("batch", "blur", tmp_path / "in", tmp_path / "in")
    assert result.exit_code == 1 and "input folder" in result.output


@pytest.mark.slow
def test_resume_does_only_what_is_missing_and_overwrite_redoes_all(tmp_path):
    photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    assert run("batch", "blur", tmp_path / "in", out, "-j", "1").exit_code == 0
    (out / "p001.png").unlink()  # as if the first run had stopped before it
    (out / "p002.png").write_bytes(b"kept: existing outputs are not read, only skipped")
    again = run("batch", "blur", tmp_path / "in", out, "-j", "1")
    assert "1 done, 3 skipped (output exists), 0 failed" in again.output
    assert (out / "p002.png").read_bytes().startswith(b"kept")
    redo = run("batch", "blur", tmp_path / "in", out, "-j", "1", "--overwrite")
    assert "4 done, 0 failed" in redo.output
    Image.open(out / "p002.png").load()


@pytest.mark.slow
def test_report_records_every_file(tmp_path):
    make_tree(tmp_path / "in")
    (tmp_path / "out" / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "out" / "sub" / "b.jpg")  # done before
    report_path = tmp_path / "report.json"
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--report", report_path, "--exclude", "deeper", "-q")
    assert result.exit_code == 1
    report = json.loads(report_path.read_text())
    broken = [f for f in report["files"] if f["source"].endswith("broken.png")][0]
    assert result.output.strip().splitlines() == [f"failed: {broken['error']}"]  # -q: only the failure
    assert report["filter"] == "blur" and report["exit_code"] == 1 and report["interrupted"] is False
    assert report["counts"] == {"done": 1, "skipped_existing": 1, "skipped_not_image": 1, "excluded": 1, "failed": 1, "interrupted": 0}
    by_name = {Path(f["source"]).name: f for f in report["files"]}
    assert len(by_name) == 5
    assert by_name["a.png"]["status"] == "done" and by_name["a.png"]["error"] is None
    assert by_name["a.png"]["seconds"] > 0 and by_name["a.png"]["megapixels"] == pytest.approx(64 * 48 / 1e6, abs=1e-3)
    assert by_name["a.png"]["destination"] == str(tmp_path / "out" / "a.png")
    assert (by_name["b.jpg"]["status"], by_name["b.jpg"]["reason"]) == ("skipped", "exists")
    assert (by_name["notes.txt"]["status"], by_name["notes.txt"]["reason"]) == ("skipped", "not-image")
    assert (by_name["c.tif"]["status"], by_name["c.tif"]["reason"]) == ("skipped", "excluded")
    assert by_name["broken.png"]["status"] == "failed" and "broken.png" in by_name["broken.png"]["error"]


def test_report_folder_must_exist(tmp_path):
    photos(tmp_path / "in", 1)
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--report", tmp_path / "nope" / "r.json")
    assert result.exit_code == 2 and "--report" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_include_and_exclude_patterns(tmp_path):
    source = tmp_path / "in"
    photos(source / "keep", 2)
    photos(source / "raw", 2)
    Image.open(SAMPLES / "rocket.jpg").save(source / "keep" / "SHOUT.JPG")
    result = run("batch", "blur", source, tmp_path / "out", "--include", "*.png", "--include", "*.jpg", "--exclude", "raw", "-j", "2")
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "out") == ["keep/SHOUT.JPG", "keep/p000.png", "keep/p001.png"]
    assert "3 done, 2 excluded, 0 failed" in result.output
    only = run("batch", "blur", source, tmp_path / "out2", "--include", "keep/p00[1]*", "-j", "1")
    assert outputs(tmp_path / "out2") == ["keep/p001.png"]


@pytest.mark.parametrize(
    "relative, patterns, expected",
    [
        ("a/b/c.jpg", ["*.jpg"], True),
        ("a/b/c.JPG", ["*.jpg"], True),
        ("a/b/c.jpg", ["c.*"], True),
        ("a/b/c.jpg", ["b"], True),
        ("a/b/c.jpg", ["a/b"], True),
        ("a/b/c.jpg", ["a/*.jpg"], True),  # * crosses folders, as in fnmatch
        ("a/b/c.jpg", ["x", "*.png"], False),
        ("a/bb/c.jpg", ["b"], False),
    ],
)
def test_matches(relative, patterns, expected):
    assert batch.matches(relative, patterns) is expected


@pytest.mark.slow
def test_format_converts_and_refuses_collisions(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    rgba = Image.open(SAMPLES / "astronaut.png").resize((40, 30)).convert("RGBA")
    rgba.save(source / "a.png")
    rgba.convert("RGB").save(source / "a.tif")  # a.png and a.tif both want out/a.jpg
    rgba.save(source / "b.png")
    result = run("batch", "blur", source, tmp_path / "out", "--format", ".JPG", "-j", "2")
    assert result.exit_code == 1
    assert outputs(tmp_path / "out") == ["a.jpg", "b.jpg"]
    assert "also the output of" in result.output and "a.tif" in result.output
    assert "warning: " in result.output and "alpha" in result.output  # what JPEG could not keep, per file
    assert Image.open(tmp_path / "out" / "b.jpg").format == "JPEG"


def test_unknown_format_is_a_usage_error(tmp_path):
    photos(tmp_path / "in", 1)
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--format", "xyz")
    assert result.exit_code == 2 and "xyz" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_bad_jobs_is_a_usage_error(tmp_path, jobs):
    photos(tmp_path / "in", 1)
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--jobs", jobs)
    assert result.exit_code == 2


@pytest.mark.slow
def test_outputs_never_escape_the_output_folder(tmp_path):
    source, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    photos(source / "sub", 1)
    photos(source / "ok", 1)
    elsewhere.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)  # a planted link
    (source / "link.png").symlink_to(SAMPLES / "camera.png")  # an input link is only read
    result = run("batch", "blur", source, out, "-j", "1")
    assert result.exit_code == 1
    assert list(elsewhere.iterdir()) == []
    assert "leads outside the output folder" in result.output
    assert sorted(outputs(out)) == ["link.png", "ok/p000.png"]
    assert not (out / "link.png").is_symlink()


def test_escapes():
    assert batch.escapes("/o/a/b.png", "/o") is None
    assert batch.escapes("/o/new/deeper/b.png", "/o") is None
    assert batch.escapes("/o/../x/b.png", "/o") is not None
    assert batch.escapes("/o/a/../../b.png", "/o") is not None


@pytest.mark.slow
def test_an_output_never_replaces_an_input(tmp_path):
    # OUT_DIR contains IN_DIR: in/in/x.png would be written over the input in/x.png.
    source = tmp_path / "in"
    photos(source, 1)
    photos(source / "in", 1)
    before = (source / "p000.png").read_bytes()
    result = run("batch", "blur", source, tmp_path, "-j", "1")
    assert result.exit_code == 1 and "is an input file of this batch" in result.output
    assert (source / "p000.png").read_bytes() == before
    assert (tmp_path / "p000.png").exists()


@pytest.mark.slow
def test_every_failure_is_isolated(tmp_path):
    source = photos(tmp_path / "in", 3)
    good = (source / "p000.png").read_bytes()
    (source / "truncated.png").write_bytes(good[: len(good) // 2])
    (source / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (source / "empty.tif").write_bytes(b"")
    (source / "dangling.png").symlink_to(tmp_path / "gone.png")
    Image.new("L", (300, 200)).save(source / "huge.png")  # over the pixel limit set below
    result = run("batch", "blur", source, tmp_path / "out", "-j", "2", "--report", tmp_path / "r.json", env={"IMGCONV_MAX_PIXELS": "50000"})
    assert result.exit_code == 1
    assert outputs(tmp_path / "out") == ["p000.png", "p001.png", "p002.png"]
    assert "3 done, 0 skipped" not in result.output and "3 done, 5 failed" in result.output
    errors = {Path(f["source"]).name: f["error"] for f in json.loads((tmp_path / "r.json").read_text())["files"] if f["error"]}
    assert set(errors) == {"truncated.png", "corrupt.jpg", "empty.tif", "dangling.png", "huge.png"}
    assert "IMGCONV_MAX_PIXELS" in errors["huge.png"] and "truncated" in errors["truncated.png"]
    assert all("\n" not in e for e in errors.values())
    assert not [p for p in (tmp_path / "out").rglob("*imgconv-tmp*")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
@pytest.mark.slow
def test_unreadable_file_is_isolated(tmp_path):
    source = photos(tmp_path / "in", 2)
    (source / "p001.png").chmod(0)
    result = run("batch", "blur", source, tmp_path / "out", "-j", "1")
    assert result.exit_code == 1 and "permission denied" in result.output
    assert outputs(tmp_path / "out") == ["p000.png"]


# ---------------------------------------------------------------------------
# the worker pool


def crashing_process(job, source, destination, **options):
    """Stand-in for process_one that kills its worker process on some files."""
    name = Path(source).name
    if name.startswith("segfault"):
        import ctypes

        ctypes.string_at(0)  # SIGSEGV, as a crash in a decoder would
    if name.startswith("oom"):
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    if name.startswith("exit"):
        os._exit(3)
    return batch.process_one(job, source, destination, **options)


@pytest.mark.slow
def test_a_worker_crash_costs_only_its_own_file(tmp_path, blur_job):
    source = photos(tmp_path / "in", 6)
    for name in ("segfault.png", "oom.png", "exit.png"):
        (source / name).write_bytes((source / "p000.png").read_bytes())
    report = run_batch(blur_job, source, tmp_path / "out", jobs=2, _process=crashing_process)
    assert report.done == 6 and report.failed == 3 and report.exit_code == 1
    assert outputs(tmp_path / "out") == [f"p{i:03d}.png" for i in range(6)]
    messages = {Path(r.source).name: r.message for r in report.failures}
    assert "SIGSEGV" in messages["segfault.png"] and "SIGKILL" in messages["oom.png"] and "exit code 3" in messages["exit.png"]
    assert all("worker process died" in m for m in messages.values())


def numba_threads_process(job, source, destination, **options):
    import numba

    result = batch.process_one(job, source, destination, **options)
    result.message = f"{numba.get_num_threads()} threads"
    return result


@pytest.mark.parametrize("jobs", [1, 3])
@pytest.mark.slow
def test_workers_times_threads_fit_the_cores(tmp_path, blur_job, jobs):
    photos(tmp_path / "in", 3)
    report = run_batch(blur_job, tmp_path / "in", tmp_path / "out", jobs=jobs, _process=numba_threads_process)
    assert report.done == 3
    cores = batch.usable_cores()
    workers = min(jobs, 3)
    threads = {int(r.message.split()[0]) for r in report.results}
    assert threads == {max(1, cores // workers)}
    assert str(workers) in report.workers


# How workers start: forked from a main process that has imported what filtering
# needs, where that is safe (a fresh process: these run in subprocesses, since the
# test process has run parallel kernels), else spawned.

START_METHOD = """
import sys, threading
from imgconv.batch.local import _start_method
case = sys.argv[1]
if case == "kernel":
    import numpy as np, imgconv
    imgconv.convolve(np.ones((64, 64), np.float32), np.ones((3, 3)))
elif case == "thread":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
elif case == "pyvips":
    import pyvips
print(_start_method(case != "library"))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
@pytest.mark.parametrize(
    "case, expected", [("fresh", "fork"), ("kernel", "spawn"), ("thread", "spawn"), ("pyvips", "spawn"), ("library", "spawn")]
)
def test_workers_are_forked_only_where_that_is_safe(case, expected):
    env = dict(os.environ, PYTHONPATH=str(REPO), IMGCONV_COMPILE="foreground")
    done = subprocess.run([sys.executable, "-c", START_METHOD, case], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected]


FORKED_BATCH = """
import json, os, sys
from pathlib import Path
from imgconv import batch
from imgconv.batch.local import _start_method
from imgconv.chain import Chain
from imgconv.kernels import load_catalog

def process(job, source, destination, **options):
    import numba
    name = Path(source).name
    if name.startswith("segfault"):
        import ctypes
        ctypes.string_at(0)
    if name.startswith("exit"):
        os._exit(3)
    result = batch.process_one(job, source, destination, **options)
    result.message = f"{numba.get_num_threads()} of {numba.config.NUMBA_NUM_THREADS} threads, parent {os.getppid()}"
    return result

assert _start_method() == "fork"
job = batch.Job(Chain.of(load_catalog().resolve("gaussian", {"sigma": 1.5})))
report = batch.run_batch(job, Path(sys.argv[1]), Path(sys.argv[2]), jobs=2, _process=process, _fork=True)
print(json.dumps({"pid": os.getpid(), "results": [(Path(r.source).name, r.status, r.message) for r in report.results]}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_forked_workers_filter_as_apply_does_and_a_crash_costs_one_file(tmp_path):
    source = photos(tmp_path / "in", 5, size=(120, 90))
    Image.open(source / "p000.png").convert("RGB").save(source / "photo.jpg", quality=90)
    Image.open(source / "p001.png").convert("I;16").save(source / "deep.png")
    for name in ("segfault.png", "exit.png"):
        (source / name).write_bytes((source / "p002.png").read_bytes())
    env = dict(os.environ, PYTHONPATH=str(REPO), IMGCONV_COMPILE="foreground", IMGCONV_RESIDENT="off")
    done = subprocess.run(
        [sys.executable, "-c", FORKED_BATCH, str(source), str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    results = {name: (status, message) for name, status, message in record["results"]}
    assert results["segfault.png"][0] == "failed" and "SIGSEGV" in results["segfault.png"][1]
    assert results["exit.png"][0] == "failed" and "exit code 3" in results["exit.png"][1]
    done_files = [name for name, (status, _) in results.items() if status == "done"]
    assert sorted(done_files) == sorted(["deep.png", "photo.jpg"] + [f"p{i:03d}.png" for i in range(5)])
    threads = max(1, batch.usable_cores() // 2)
    for name in done_files:
        assert results[name][1] == f"{threads} of {threads} threads, parent {record['pid']}"  # children of the main process
        direct = tmp_path / "direct" / name
        direct.parent.mkdir(exist_ok=True)
        applied = subprocess.run(
            [sys.executable, "-m", "imgconv", "apply", "gaussian", "-p", "sigma=1.5", str(source / name), str(direct)],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert applied.returncode == 0, applied.stderr
        assert (tmp_path / "out" / name).read_bytes() == direct.read_bytes(), name


def test_job_pickles(blur_job):
    # Worker processes and Dask both receive the job pickled.
    assert pickle.loads(pickle.dumps(blur_job)) == blur_job


def test_bad_arguments(tmp_path, blur_job):
    photos(tmp_path / "in", 1)
    with pytest.raises(ValueError, match="jobs"):
        run_batch(blur_job, tmp_path / "in", tmp_path / "out", jobs=0)
    with pytest.raises(ValueError, match="extension"):
        run_batch(blur_job, tmp_path / "in", tmp_path / "out", extension="xyz")


def slow_process(job, source, destination, **options):
    """Writes a temporary file as io.write_image does, then takes its time."""
    temp = Path(destination).parent / f".{Path(destination).stem}.imgconv-tmp-abcd{Path(destination).suffix}"
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    try:
        temp.write_bytes(b"partial")
        time.sleep(60)
    finally:
        temp.unlink(missing_ok=True)
    return FileResult(str(source), str(destination), "done")


@pytest.mark.slow
def test_second_ctrl_c_abandons_the_files_in_progress(tmp_path, blur_job):
    photos(tmp_path / "in", 5)
    out = tmp_path / "out"
    events = []

    def interrupt_twice():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(out.rglob("*imgconv-tmp*"))) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_twice, daemon=True).start()
    started = time.monotonic()
    report = run_batch(blur_job, tmp_path / "in", out, jobs=2, _process=slow_process, on_interrupt=lambda *a: events.append(a))
    assert time.monotonic() - started < 30
    assert report.interrupted and report.exit_code == 130
    assert report.unfinished == 5 and report.done == 0
    assert sorted(r.reason for r in report.results) == ["abandoned"] * 2 + ["not-started"] * 3
    assert [abandoning for _, abandoning in events] == [False, True] and events[0][0] == 2
    assert list(out.rglob("*")) == []  # the temporary files of the abandoned files are gone


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(tmp_path):
    source = photos(tmp_path / "in", 40, size=(400, 300))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "imgconv", "batch", "gaussian", "-p", "sigma=6", str(source), str(out), "-j", "1"]
    command += ["--report", str(tmp_path / "r.json")]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(out.rglob("*.png")):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C at a terminal: the whole process group, workers too
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted: " in stderr and "not finished" in stderr
    written = outputs(out)
    assert 0 < len(written) < 40
    assert not [name for name in written if "imgconv-tmp" in name]
    for name in written:  # every output is whole
        Image.open(out / name).load()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] and report["counts"]["done"] == len(written)
    assert report["counts"]["interrupted"] == 40 - len(written)
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{40 - len(written)} done, {len(written)} skipped (output exists), 0 failed" in again.stderr
    assert len(outputs(out)) == 40


# ---------------------------------------------------------------------------
# what the user sees


@pytest.mark.slow
def test_progress_bar_on_a_terminal_only(tmp_path):
    photos(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.png").write_bytes(b"not a PNG")
    command = [sys.executable, "-m", "imgconv", "batch", "blur", str(tmp_path / "in"), str(tmp_path / "out"), "-j", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="100")
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 1
    text = shown.decode()
    assert "filtering" in text and "4/4" in text and "\r" in text and "images/s" in text
    assert "\r\x1b[Kfailed: cannot read" in text  # the bar is cleared for the line, then drawn again
    assert "3 done, 1 failed" in text
    # Not a terminal (CliRunner): no bar, just the summary (--quiet: see test_report_records_every_file).
    plain = run("batch", "blur", tmp_path / "in", tmp_path / "out2", "-j", "1")
    assert "filtering" not in plain.output and plain.output.strip().splitlines()[-1].startswith("3 done, 1 failed")


# ---------------------------------------------------------------------------
# Dask


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install 'imgconv[dask]')")
    import logging

    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None, silence_logs=logging.ERROR
    )
    yield cluster
    cluster.close()


@pytest.mark.slow
def test_dask_cluster_gives_the_same_outputs_report_and_exit_code(tmp_path, dask_cluster):
    make_tree(tmp_path / "in")
    local = run("batch", "blur", tmp_path / "in", tmp_path / "local", "-j", "2", "--report", tmp_path / "local.json")
    dask = run("batch", "blur", tmp_path / "in", tmp_path / "dask", "--scheduler", dask_cluster.scheduler_address, "--report", tmp_path / "dask.json")
    assert dask.exit_code == local.exit_code == 1
    assert "3 done, 1 skipped (not images), 1 failed" in dask.output and "broken.png" in dask.output
    assert outputs(tmp_path / "dask") == outputs(tmp_path / "local") == ["a.png", "sub/b.jpg", "sub/deeper/c.tif"]
    for name in outputs(tmp_path / "dask"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()

    def statuses(path):
        files = json.loads(path.read_text())["files"]
        return [(Path(f["source"]).name, f["status"], f["reason"], (f["error"] or "").replace("/local", "/X").replace("/dask", "/X")) for f in files]

    assert statuses(tmp_path / "dask.json") == statuses(tmp_path / "local.json")
    again = run("batch", "blur", tmp_path / "in", tmp_path / "dask", "--scheduler", dask_cluster.scheduler_address)
    assert "0 done, 3 skipped (output exists), 1 skipped (not images), 1 failed" in again.output


@pytest.mark.slow
def test_dask_local_cluster(tmp_path):
    pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install 'imgconv[dask]')")
    photos(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.png").write_bytes(b"not a png")
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--scheduler", "local", "-j", "1")
    assert result.exit_code == 1 and "3 done, 1 failed" in result.output
    assert outputs(tmp_path / "out") == ["p000.png", "p001.png", "p002.png"]


def test_dask_missing_is_a_clear_error(tmp_path, blur_job, monkeypatch):
    photos(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(batch.ImgconvError, match=r"imgconv\[dask\]"):
        run_batch(blur_job, tmp_path / "in", tmp_path / "out", scheduler="local")


@pytest.mark.slow
def test_unreachable_scheduler_is_one_line(tmp_path):
    pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install 'imgconv[dask]')")
    photos(tmp_path / "in", 1)
    import dask

    for address in ("tcp://127.0.0.1:9", "nohost", "http://x:1"):
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--scheduler", address)
        assert result.exit_code == 1 and "cannot connect to the Dask scheduler" in result.output
        assert len(result.output.strip().splitlines()) == 1
