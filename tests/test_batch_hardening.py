"""Batch hardening (issue 10, items 5, 7, 8, 9, 17, 18): names that are not UTF-8 in
the report, folders that cannot be listed, the containment race, files that are not
regular files, workers that outlive their parent, patterns that match nothing, empty
output folders, and a time limit per file.

Tests that start worker processes are marked slow; the others run the batch's parts
(planning, :func:`process_one`, the report) in this process.
"""

import base64
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_batch import REPO, outputs, photos

from imgconv import io, pipeline
from imgconv.batch import FileResult, Job, Report, plan_batch, process_one, run_batch
from imgconv.cli import cli
from imgconv.errors import ImgconvError


def run(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def blur_job():
    from imgconv.chain import Chain
    from imgconv.kernels import load_catalog

    return Job(Chain.of(load_catalog().resolve("blur", {})))


def leftovers(*folders):
    return [p for folder in folders for p in Path(folder).rglob("*imgconv-tmp*")]


def subprocess_env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


# ---------------------------------------------------------------------------
# 5. names that are not UTF-8 in the report


def test_report_keeps_names_that_are_not_utf8_losslessly(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9-\xff.png"  # Latin-1 and a stray byte: not UTF-8
    name = os.fsdecode(raw)
    report = Report()
    report.add(FileResult(name, name + ".out.png", "failed", f"cannot read '{name}'"))
    report.add(FileResult(str(tmp_path / "plain-é.png"), None, "skipped", reason="not-image"))
    report.write_json(tmp_path / "r.json")
    text = (tmp_path / "r.json").read_bytes().decode("utf-8")  # the file itself is valid UTF-8
    assert "\\udce9" in text and "\\udcff" in text and "plain-é.png" in text
    odd, plain = json.loads(text)["files"]
    assert os.fsencode(odd["source"]) == raw and os.fsencode(odd["destination"]) == raw + b".out.png"
    assert base64.b64decode(odd["source_bytes"]) == raw
    assert base64.b64decode(odd["destination_bytes"]) == raw + b".out.png"
    assert os.fsencode(odd["error"]) == b"cannot read '" + raw + b"'"
    assert "source_bytes" not in plain and "destination_bytes" not in plain
    assert leftovers(tmp_path) == []


def test_a_report_that_cannot_be_written_leaves_no_temporary_file(tmp_path, monkeypatch):
    report = Report()
    report.add(FileResult("a.png", "b.png", "done"))

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full_disk)
        with pytest.raises(ImgconvError, match="cannot write the report .*No space left"):
            report.write_json(tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_batch_with_a_name_that_is_not_utf8_writes_its_report_and_summary(tmp_path):
    source = photos(tmp_path / "in", 1)
    raw_name = b"caf\xe9.png"
    os.rename(source / "p000.png", os.path.join(os.fsencode(source), raw_name))
    result = run("batch", "blur", source, tmp_path / "out", "-j", "1", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "1 done, 0 failed" in result.output
    assert os.listdir(os.fsencode(tmp_path / "out")) == [raw_name]
    [entry] = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["files"]
    assert entry["status"] == "done"
    assert os.fsencode(entry["source"]) == os.path.join(os.fsencode(source), raw_name)
    assert base64.b64decode(entry["destination_bytes"]) == os.path.join(os.fsencode(tmp_path / "out"), raw_name)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# 7. folders that cannot be listed


def unlistable(monkeypatch, *folders):
    """os.scandir refuses ``folders`` as it would a folder chmod 000 for an ordinary user (tests run as root)."""
    real = os.scandir
    refused = {os.fspath(f) for f in folders}

    def scandir(path="."):
        if os.fspath(path) in refused:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_listed_is_a_failure(tmp_path, monkeypatch):
    source = photos(tmp_path / "in", 1)
    photos(source / "locked", 2)
    unlistable(monkeypatch, source / "locked")
    tasks, results = plan_batch(source, tmp_path / "out")
    assert [t.source.name for t in tasks] == ["p000.png"]
    [failure] = results
    assert (failure.status, failure.reason, failure.source) == ("failed", "unreadable-folder", str(source / "locked"))
    assert "cannot list the folder" in failure.message and "Permission denied" in failure.message


def test_batch_with_an_unlistable_folder_fails_and_reports_it(tmp_path, monkeypatch):
    source = tmp_path / "in"
    photos(source / "locked", 1)
    unlistable(monkeypatch, source / "locked")
    result = run("batch", "blur", source, tmp_path / "out", "--report", tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    assert "failed: cannot list the folder" in result.output and "0 done, 1 failed" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["exit_code"] == 1 and report["counts"]["failed"] == 1
    assert [(f["source"], f["reason"]) for f in report["files"]] == [(str(source / "locked"), "unreadable-folder")]


def test_an_unlistable_input_folder_is_a_failure_too(tmp_path, monkeypatch):
    source = photos(tmp_path / "in", 1)
    unlistable(monkeypatch, source)
    tasks, results = plan_batch(source, tmp_path / "out")
    assert tasks == [] and [r.status for r in results] == ["failed"]


# ---------------------------------------------------------------------------
# 8. the containment race: a folder swapped for a link between the check and the write


@pytest.fixture
def swapping(tmp_path, monkeypatch, blur_job):
    """``filter_swapping(module, name)`` filters in/sub/p000.png into out/sub/ (which
    exists), swapping out/sub for a link to elsewhere/ when ``module.name`` is called."""
    source = photos(tmp_path / "in" / "sub", 1)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "sub").mkdir(parents=True)
    elsewhere.mkdir()

    def filter_swapping(module, name):
        real = getattr(module, name)

        def swap_first(*args, **kwargs):
            (out / "sub").rename(out / "sub.moved")
            (out / "sub").symlink_to(elsewhere, target_is_directory=True)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, swap_first)
        return process_one(blur_job, source / "p000.png", out / "sub" / "p000.png", out_dir=out)

    return filter_swapping, out, elsewhere


def test_a_folder_swapped_for_a_link_while_filtering_is_not_written_through(swapping):
    filter_swapping, out, elsewhere = swapping
    result = filter_swapping(pipeline, "read_checked")  # after the check, before the write
    assert result.status == "failed" and "symbolic link" in result.message, result.message
    assert list(elsewhere.iterdir()) == [] and list((out / "sub.moved").iterdir()) == []


def test_a_folder_swapped_after_it_was_opened_still_gets_the_output(swapping):
    # The folder is checked and opened once; the write goes through that descriptor.
    filter_swapping, out, elsewhere = swapping
    result = filter_swapping(io, "write_atomically")
    assert result.status == "done", result.message
    assert list(elsewhere.iterdir()) == []
    assert [p.name for p in (out / "sub.moved").iterdir()] == ["p000.png"]


def half_then_fail(stream):
    stream.write(b"half")
    raise RuntimeError("the encoder failed")


def test_write_atomically_into_an_opened_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"old")
    os.chmod(tmp_path / "d" / "x.bin", 0o640)
    fd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # With dir_fd only the name's last component counts: the folder is the opened one.
        io.write_atomically("/nowhere/x.bin", lambda stream: stream.write(b"new"), dir_fd=fd)
        with pytest.raises(RuntimeError):
            io.write_atomically("x.bin", half_then_fail, dir_fd=fd)
    finally:
        os.close(fd)
    assert (tmp_path / "d" / "x.bin").read_bytes() == b"new"
    assert (tmp_path / "d" / "x.bin").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.bin"]
    io.write_atomically(tmp_path / "d" / "y.bin", lambda stream: stream.write(b"by path"))  # as before
    assert (tmp_path / "d" / "y.bin").read_bytes() == b"by path"


# ---------------------------------------------------------------------------
# 9. files that are not regular files, and workers whose parent died


def test_files_that_are_not_regular_files_are_skipped_with_a_reason(tmp_path):
    source = photos(tmp_path / "in", 1)
    os.mkfifo(source / "pipe.png")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(source / "sock.jpg"))
        tasks, results = plan_batch(source, tmp_path / "out")
    finally:
        server.close()
    assert [t.source.name for t in tasks] == ["p000.png"]
    by_name = {Path(r.source).name: r for r in results}
    assert {n: (r.status, r.reason) for n, r in by_name.items()} == {
        "pipe.png": ("skipped", "not-regular"),
        "sock.jpg": ("skipped", "not-regular"),
    }
    assert "FIFO" in by_name["pipe.png"].warnings[0] and "socket" in by_name["sock.jpg"].warnings[0]
    report = Report(results=list(results))
    assert "2 skipped (not images)" in report.summary()
    assert report.exit_code == 0


@pytest.mark.slow
def test_a_fifo_named_png_does_not_hang_the_batch(tmp_path):
    source = photos(tmp_path / "in", 2)
    os.mkfifo(source / "pipe.png")
    command = [sys.executable, "-m", "imgconv", "batch", "blur", str(source), str(tmp_path / "out"), "-j", "1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=subprocess_env(), start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr
    assert "2 done, 1 skipped (not images), 0 failed" in stderr and "FIFO" in stderr
    assert outputs(tmp_path / "out") == ["p000.png", "p001.png"]


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie waits only for its reaper


HANGING_BATCH = """
import os, sys, time
from imgconv.batch import Job, run_batch
from imgconv.chain import Chain
from imgconv.kernels import load_catalog
import hang_helper

if __name__ == "__main__":
    job = Job(Chain.of(load_catalog().resolve("blur", {})))
    run_batch(job, sys.argv[1], sys.argv[2], jobs=1, _process=hang_helper.hang)
"""

HANG_HELPER = """
import os, signal, time

def hang(job, source, destination, **options):
    with open(os.environ["HANG_PID_FILE"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.environ["HANG_PID_FILE"] + ".tmp", os.environ["HANG_PID_FILE"])
    time.sleep(600)  # a decoder that never returns
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_does_not_outlive_its_killed_parent(tmp_path):
    photos(tmp_path / "in", 1)
    (tmp_path / "main.py").write_text(textwrap.dedent(HANGING_BATCH))
    (tmp_path / "hang_helper.py").write_text(textwrap.dedent(HANG_HELPER))
    pid_file = tmp_path / "worker.pid"
    env = subprocess_env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    env["HANG_PID_FILE"] = str(pid_file)
    main = subprocess.Popen([sys.executable, str(tmp_path / "main.py"), str(tmp_path / "in"), str(tmp_path / "out")], env=env)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not pid_file.exists():
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        main.kill()  # SIGKILL: no clean-up runs in the main process
        main.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(worker):
            time.sleep(0.05)
        assert not alive(worker), "the worker outlived its parent"
    finally:
        if main.poll() is None:
            main.kill()
        if worker is not None and alive(worker):
            os.kill(worker, signal.SIGKILL)


# ---------------------------------------------------------------------------
# 17. patterns that match nothing; output folders only for outputs


def test_include_that_matches_nothing_says_so(tmp_path):
    photos(tmp_path / "in", 2)
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--include", "*.xyz")
    assert result.exit_code == 0
    assert "no file under" in result.output and "matched --include '*.xyz'" in result.output
    quiet = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--include", "*.xyz", "-q")
    assert quiet.exit_code == 0 and quiet.output == ""
    assert not (tmp_path / "out").exists()


def test_a_file_that_fails_leaves_no_empty_output_folder(tmp_path, blur_job):
    (tmp_path / "in" / "sub" / "deeper").mkdir(parents=True)
    broken = tmp_path / "in" / "sub" / "deeper" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    result = process_one(blur_job, broken, out / "sub" / "deeper" / "broken.png", out_dir=out)
    assert result.status == "failed"
    assert not (out / "sub").exists()


@pytest.mark.slow
def test_batch_creates_folders_only_for_outputs(tmp_path):
    source = photos(tmp_path / "in", 1)
    (source / "bad" / "worse").mkdir(parents=True)
    (source / "bad" / "worse" / "x.png").write_bytes(b"not a PNG")
    (source / "bad" / "y.jpg").write_bytes(b"not a JPEG")
    photos(source / "good" / "deep", 1)
    result = run("batch", "blur", source, tmp_path / "out", "-j", "2")
    assert result.exit_code == 1 and "2 done, 2 failed" in result.output
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")) == [
        "good", "good/deep", "good/deep/p000.png", "p000.png",
    ]


# ---------------------------------------------------------------------------
# 18. a time limit per file


def test_a_file_over_the_time_limit_fails_without_an_output(tmp_path, monkeypatch, blur_job):
    source = photos(tmp_path / "in", 1) / "p000.png"
    real = pipeline.read_checked

    def slow_read(*args, **kwargs):
        time.sleep(0.6)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "read_checked", slow_read)
    result = process_one(blur_job, source, tmp_path / "out" / "p000.png", out_dir=tmp_path / "out", timeout=0.3)
    assert (result.status, result.reason) == ("failed", "timeout")
    assert "time limit" in result.message and "0.3 s" in result.message
    assert not (tmp_path / "out").exists()
    assert process_one(blur_job, source, tmp_path / "out" / "p000.png", out_dir=tmp_path / "out", timeout=30).status == "done"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_bad_timeout_is_a_usage_error(tmp_path, value):
    photos(tmp_path / "in", 1)
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--timeout", value)
    assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.output
    assert not (tmp_path / "out").exists()


def test_bad_timeout_from_python(tmp_path, blur_job):
    photos(tmp_path / "in", 1)
    for value in (0, -2.5, float("nan"), float("inf"), "5", True):
        with pytest.raises(ValueError, match="timeout"):
            run_batch(blur_job, tmp_path / "in", tmp_path / "out", timeout=value)


def hanging_process(job, source, destination, **options):
    """Stand-in for process_one: files named hang* never finish, and ignore SIGTERM (as
    compiled code does: Python's handlers never run)."""
    if Path(source).name.startswith("hang"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        time.sleep(600)
    return process_one(job, source, destination, **options)


@pytest.mark.slow
def test_a_hung_file_fails_on_timeout_and_its_worker_is_replaced(tmp_path, blur_job):
    source = photos(tmp_path / "in", 3)
    (source / "hang.png").write_bytes((source / "p000.png").read_bytes())
    started = time.monotonic()
    report = run_batch(blur_job, source, tmp_path / "out", jobs=1, timeout=8, _process=hanging_process)
    assert time.monotonic() - started < 60
    assert report.done == 3 and report.failed == 1 and report.exit_code == 1
    [failure] = report.failures
    assert (Path(failure.source).name, failure.reason) == ("hang.png", "timeout")
    assert "time limit (8 s)" in failure.message
    assert outputs(tmp_path / "out") == ["p000.png", "p001.png", "p002.png"]


def test_timeout_on_the_command_line(tmp_path, monkeypatch):
    import imgconv.batch

    photos(tmp_path / "in", 1)
    given = {}

    def fake_run_batch(job, in_dir, out_dir, **options):
        given.update(options)
        return Report()

    monkeypatch.setattr(imgconv.batch, "run_batch", fake_run_batch)
    assert run("batch", "blur", tmp_path / "in", tmp_path / "out", "--timeout", "2.5").exit_code == 0
    assert given["timeout"] == 2.5
    assert run("batch", "blur", tmp_path / "in", tmp_path / "out").exit_code == 0
    assert given["timeout"] is None


@pytest.mark.slow
def test_dask_time_limit_is_checked_before_writing(tmp_path, monkeypatch, blur_job):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install 'imgconv[dask]')")
    import logging

    photos(tmp_path / "in", 2)
    real = pipeline.read_checked

    def slow_read(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "read_checked", slow_read)  # the cluster's threads run in this process
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        report = run_batch(blur_job, tmp_path / "in", tmp_path / "out", scheduler=cluster.scheduler_address, timeout=0.5)
    assert report.failed == 2 and {r.reason for r in report.failures} == {"timeout"}
    assert not (tmp_path / "out").exists()
