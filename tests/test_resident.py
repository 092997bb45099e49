"""The resident worker (imgconv/resident.py): ``imgconv apply`` handed to a warm
process gives what a fresh process gives, byte for byte, exit code for exit
code, signal for signal; it serves only identical callers, and it starts,
idles out, stops and survives crashes as documented."""

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgconv
from imgconv import resident

IMGCONV = [sys.executable, "-m", "imgconv"]


# --- without processes ---------------------------------------------------------------------------


def test_only_apply_and_batch_are_handed_over():
    assert resident._wants_worker(["apply", "blur", "a.png", "b.png"])
    assert resident._wants_worker(["batch", "blur", "a", "b", "--jobs", "2"])
    assert resident._wants_worker(["--catalog", "apply", "apply", "blur", "a.png", "b.png"])  # the catalog file named apply
    for args in (["list"], ["show", "blur"], ["--help"], ["apply-x"], ["gallery", "a"], ["--", "apply"], [], ["-h", "apply"]):
        assert not resident._wants_worker(args), args


def test_the_identity_covers_what_answers_depend_on(monkeypatch):
    plain = resident.identity()
    assert resident.identity() == plain
    monkeypatch.setenv("PWD", "/somewhere/else")  # the shell's bookkeeping: still the same caller
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another test")
    assert resident.identity() == plain
    for name, value in (("IMGCONV_MAX_PIXELS", "12345"), ("NUMBA_NUM_THREADS", "1"), ("LC_ALL", "C")):
        monkeypatch.setenv(name, value)
        assert resident.identity() != plain, name
        monkeypatch.undo()
    monkeypatch.setattr(sys, "path", [*sys.path, "/an/extra/path"])
    assert resident.identity() != plain
    monkeypatch.undo()
    mask = os.umask(0o077)
    try:
        assert resident.identity() != plain
    finally:
        os.umask(mask)


def test_the_identity_follows_the_installed_files(monkeypatch, tmp_path):
    plain = resident.identity()
    copy = tmp_path / "imgconv"
    copy.mkdir()
    (copy / "resident.py").write_text("")
    monkeypatch.setattr(resident, "__file__", str(copy / "resident.py"))
    assert resident.identity() != plain


def test_a_folder_others_can_enter_is_not_used(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = resident._folder()
    assert folder == str(tmp_path / f"imgconv-{os.getuid()}")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    os.chmod(folder, 0o755)
    assert resident._folder() is None
    os.chmod(folder, 0o700)
    os.rmdir(folder)
    os.symlink(tmp_path, folder)  # not a folder of its own
    assert resident._folder() is None


def test_without_a_worker_the_command_runs_here(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(resident, "_start", None)
    assert resident.serve_call(["apply", "blur", "a.png", "b.png"]) is None  # no socket
    monkeypatch.setenv(resident.RESIDENT_ENV, "off")
    assert resident.serve_call(["apply", "blur", "a.png", "b.png"]) is None


# --- with a worker -------------------------------------------------------------------------------


def _image(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng()
    work = tmp_path / "work"
    work.mkdir()
    _image(work / "rgb.png", rng.integers(0, 256, (37, 52, 3), dtype=np.uint8))
    _image(work / "rgba.png", rng.integers(0, 256, (30, 41, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 65536, (33, 29), dtype=np.uint16)).save(work / "grey16.png")
    np.save(work / "big.npy", rng.normal(size=(151, 151)))
    _image(work / "large.png", rng.integers(0, 256, (3000, 3000), dtype=np.uint8))
    return work


@pytest.fixture
def env(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    environment = dict(os.environ, XDG_RUNTIME_DIR=str(run), IMGCONV_RESIDENT_IDLE="120")
    environment.pop(resident.RESIDENT_ENV, None)
    yield environment
    subprocess.run([sys.executable, "-m", "imgconv.resident", "stop"], env=environment, capture_output=True, timeout=30)


def _folder(env) -> Path:
    return Path(env["XDG_RUNTIME_DIR"]) / f"imgconv-{os.getuid()}"


def _log(env) -> str:
    return "".join(path.read_text() for path in _folder(env).glob("*.log"))


def _served(env) -> int:
    return _log(env).count("a command runs in copy")


def _copies(env) -> list:
    return [int(line.rsplit(" ", 1)[1]) for line in _log(env).splitlines() if "a command runs in copy" in line]


def _workers(env) -> list:
    return [int(line.split("[", 1)[1].split("]", 1)[0]) for line in _log(env).splitlines() if "listening on" in line]


def _run(args, env, cwd, **kwargs):
    return subprocess.run([*IMGCONV, *args], env=env, cwd=cwd, capture_output=True, timeout=120, **kwargs)


def _direct(env):
    return dict(env, **{resident.RESIDENT_ENV: "off"})


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as status:
            return status.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(condition, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _start(env, cwd, **options):
    """Two commands in a row start a worker; wait until it listens (``options``: for
    subprocess.run, e.g. a ``preexec_fn`` that makes the callers' identity)."""
    before = len(_workers(env))
    for _ in range(2):
        assert _run(["apply", "sharpen", "rgb.png", "warm-up.png"], env, cwd, **options).returncode == 0
    assert _wait(lambda: len(_workers(env)) > before), _log(env)
    served = _served(env)
    assert _run(["apply", "sharpen", "rgb.png", "warm-up.png"], env, cwd, **options).returncode == 0
    assert _served(env) == served + 1, _log(env)


COMMANDS = [
    ["apply", "sharpen", "rgb.png", "{out}.png"],
    ["apply", "gaussian", "-p", "sigma=1.5", "grey16.png", "{out}.png", "--mode", "wrap"],
    ["apply", "gaussian:sigma=1,sharpen", "rgba.png", "{out}.png", "--alpha", "premultiplied"],
    ["apply", "unsharp", "rgb.png", "{out}.tif", "--strength", "0.5", "--linear", "--explain"],
    ["apply", "blur", "grey16.png", "{out}.jpg"],  # 16 bits into JPEG: a warning
    ["apply", "sharpen", "missing.png", "{out}.png"],  # exit 2, one line
    ["apply", "no-such-filter", "rgb.png", "{out}.png"],
    ["apply", "gaussian", "-p", "sigma=-1", "rgb.png", "{out}.png"],
    ["apply", "--kernel", "big.npy", "rgb.png", "{out}.png"],  # a kernel larger than the image
    ["apply", "blur", "rgb.png", "/no/such/folder/{out}.png"],  # exit 1
]


@pytest.mark.slow
def test_served_commands_do_what_fresh_processes_do(env, files):
    _start(env, files)
    for number, template in enumerate(COMMANDS):
        results = []
        for kind, environment in (("direct", _direct(env)), ("served", env)):
            args = [part.replace("{out}", f"{kind}-{number}") for part in template]
            served = _served(env)
            done = _run(args, environment, files)
            assert _served(env) == served + (kind == "served"), (args, _log(env))
            outputs = sorted(files.glob(f"{kind}-{number}.*"))
            texts = [part.replace(f"{kind}-{number}", "OUT") for part in (done.stdout.decode(), done.stderr.decode())]
            results.append((done.returncode, texts, [path.suffix for path in outputs], [path.read_bytes() for path in outputs]))
        assert results[0] == results[1], template
    stdin = (files / "rgb.png").read_bytes()
    direct = _run(["apply", "blur", "-", "-"], _direct(env), files, input=stdin)
    served = _run(["apply", "blur", "-", "-"], env, files, input=stdin)
    assert direct.returncode == served.returncode == 0
    assert direct.stdout == served.stdout and len(served.stdout) > 100
    assert direct.stderr == served.stderr


@pytest.mark.slow
def test_a_served_batch_does_what_a_fresh_one_does(env, files):
    _start(env, files)
    tree = files / "tree"
    (tree / "sub").mkdir(parents=True)
    for name in ("rgb.png", "rgba.png", "grey16.png"):
        (tree / name).write_bytes((files / name).read_bytes())
        (tree / "sub" / name).write_bytes((files / name).read_bytes())
    (tree / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    results = []
    for kind, environment in (("direct", _direct(env)), ("served", env)):
        served = _served(env)
        done = _run(["batch", "gaussian", "-p", "sigma=1.5", "tree", f"{kind}-out", "--jobs", "2", "--quiet"], environment, files)
        assert _served(env) == served + (kind == "served"), _log(env)
        out = files / f"{kind}-out"
        written = {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}
        results.append((done.returncode, done.stdout, done.stderr, written))
    assert results[0] == results[1]
    assert results[1][0] == 1 and b"broken.png" in results[1][2] and len(results[1][3]) == 6


def _large_tree(files, count):
    """A folder ``many`` of ``count`` copies of the large image: a batch that runs for seconds."""
    tree = files / "many"
    tree.mkdir()
    for number in range(count):
        (tree / f"{number:02d}.png").write_bytes((files / "large.png").read_bytes())


@pytest.mark.slow
def test_ctrl_c_reaches_a_served_batch(env, files):
    """The first Ctrl-C stops handing out files and lets those in progress finish: as in a fresh process."""
    _start(env, files)
    _large_tree(files, 40)
    outcomes = []
    for kind, environment in (("direct", _direct(env)), ("served", env)):
        out = files / f"{kind}-many"
        process = subprocess.Popen(
            [*IMGCONV, "batch", "gaussian", "-p", "sigma=8", "many", str(out), "--jobs", "1"],
            env=environment, cwd=files, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert _wait(lambda: out.exists() and any(out.iterdir()), 60), kind
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        names = [path.name for path in out.iterdir()]
        outcomes.append((kind, process.returncode, b"interrupted" in err.lower(), len(names) < 40, [n for n in names if "tmp" in n]))
    assert [outcome[1:] for outcome in outcomes] == [(130, True, True, [])] * 2, outcomes


def _state(pid) -> str:
    try:
        with open(f"/proc/{pid}/stat") as status:
            return status.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _children(pid) -> list:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as status:
                    if int(status.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_ctrl_z_stops_a_served_batch_with_its_workers(env, files):
    _start(env, files)
    _large_tree(files, 12)
    out = files / "stopped"
    process = subprocess.Popen(
        [*IMGCONV, "batch", "gaussian", "-p", "sigma=8", "many", str(out), "--jobs", "2", "--quiet"],
        env=env, cwd=files, process_group=0,  # a job of its own, as a shell starts one
    )
    try:
        assert _wait(lambda: out.exists() and any(out.iterdir()), 60)
        copy = _copies(env)[-1]
        workers = _children(copy)
        assert workers, "the served batch has no workers"
        process.send_signal(signal.SIGTSTP)
        assert _wait(lambda: all(_state(pid) == "T" for pid in [process.pid, copy, *workers]), 30), [
            _state(pid) for pid in [process.pid, copy, *workers]
        ]
        written = sorted(out.iterdir())
        time.sleep(1.5)
        assert sorted(out.iterdir()) == written  # nothing filters while the command is stopped
        process.send_signal(signal.SIGCONT)
        assert process.wait(timeout=120) == 0
        assert len(list(out.glob("*.png"))) == 12
    finally:
        if process.poll() is None:
            process.kill()
            os.kill(process.pid, signal.SIGCONT)


def _long_command(env, files, out):
    """A command that runs for seconds in the worker's copy (a 151x151 kernel forced direct, 2e11 multiply-adds)."""
    served = _served(env)
    process = subprocess.Popen(
        [*IMGCONV, "apply", "--kernel", "big.npy", "large.png", out, "--strategy", "direct", "--threads", "1"],
        env=env, cwd=files, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    if env.get(resident.RESIDENT_ENV) != "off":
        assert _wait(lambda: _served(env) == served + 1, 30)
    time.sleep(1.5)  # well into the filtering, in both kinds of process
    assert process.poll() is None, process.communicate()
    return process


@pytest.mark.slow
@pytest.mark.parametrize("number, code, message", [(signal.SIGTERM, 143, ""), (signal.SIGINT, 130, "interrupted")])
def test_signals_reach_the_command(env, files, number, code, message):
    _start(env, files)
    outcomes = []
    for kind, environment in (("direct", _direct(env)), ("served", env)):
        process = _long_command(environment, files, f"{kind}.png")
        process.send_signal(number)
        _, err = process.communicate(timeout=60)
        leftovers = sorted(path.name for path in files.iterdir() if path.name.startswith((kind, f".{kind}")))
        outcomes.append((process.returncode, err.decode().strip(), leftovers))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1] == (code, message, [])
    assert not any(_alive(pid) for pid in _copies(env))


@pytest.mark.slow
def test_a_caller_killed_outright_takes_its_command_with_it(env, files):
    _start(env, files)
    process = _long_command(env, files, "killed.png")
    copy = _copies(env)[-1]
    process.kill()
    process.wait()
    assert _wait(lambda: not _alive(copy), 30)
    assert not (files / "killed.png").exists()
    assert _run(["apply", "blur", "rgb.png", "after.png"], env, files).returncode == 0  # the worker goes on


@pytest.mark.slow
def test_a_copy_that_crashes_ends_its_caller_the_same_way(env, files):
    _start(env, files)
    process = _long_command(env, files, "crashed.png")
    os.kill(_copies(env)[-1], signal.SIGSEGV)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGSEGV


@pytest.mark.slow
def test_concurrent_callers(env, files):
    _start(env, files)
    expected = _run(["apply", "gaussian", "-p", "sigma=2", "rgb.png", "expected.png"], _direct(env), files)
    assert expected.returncode == 0
    served = _served(env)
    callers = [
        subprocess.Popen([*IMGCONV, "apply", "gaussian", "-p", "sigma=2", "rgb.png", f"out-{n}.png"], env=env, cwd=files, stderr=subprocess.PIPE)
        for n in range(6)
    ]
    for caller in callers:
        assert caller.wait(timeout=120) == 0, caller.stderr.read()
    assert _served(env) == served + 6
    reference = (files / "expected.png").read_bytes()
    assert all((files / f"out-{n}.png").read_bytes() == reference for n in range(6))


@pytest.mark.slow
def test_a_crashed_worker_is_replaced(env, files):
    _start(env, files)
    worker = _workers(env)[-1]
    os.kill(worker, signal.SIGKILL)
    assert _wait(lambda: not _alive(worker), 30)
    served = _served(env)
    done = _run(["apply", "blur", "rgb.png", "alone.png"], env, files)  # its socket is left, nobody listens
    assert done.returncode == 0 and (files / "alone.png").exists() and _served(env) == served
    # That command, run here, was a second one in a short while: it started a new worker.
    assert _wait(lambda: len(_workers(env)) == 2), _log(env)
    assert _run(["apply", "blur", "rgb.png", "served.png"], env, files).returncode == 0
    assert _served(env) == served + 1 and _alive(_workers(env)[-1])
    assert (files / "served.png").read_bytes() == (files / "alone.png").read_bytes()


@pytest.mark.slow
def test_an_upgrade_is_not_served_by_the_old_worker(env, files):
    """Changed files (here: a module's time) make a new identity: the old worker never sees the caller."""
    _start(env, files)
    module = Path(imgconv.__file__).parent / "plot.py"
    if not os.access(module, os.W_OK):
        pytest.skip("the installed package cannot be changed here")
    stamp = os.stat(module)
    served = _served(env)
    try:
        os.utime(module, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
        done = _run(["apply", "blur", "rgb.png", "upgraded.png"], env, files)
        assert done.returncode == 0 and (files / "upgraded.png").exists()
        assert _served(env) == served
    finally:
        os.utime(module, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))


@pytest.mark.slow
def test_a_worker_refuses_another_identity(env, files):
    _start(env, files)
    import marshal

    (path,) = _folder(env).glob("*.sock")
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(str(path))
    payload = marshal.dumps((resident._PROTOCOL, b"someone else", ["imgconv", "apply"], dict(env), []))
    resident._send_message(connection, payload)
    assert connection.recv(1) == b"-"
    connection.close()
    assert _run(["apply", "blur", "rgb.png", "still.png"], env, files).returncode == 0


@pytest.mark.slow
def test_off_starts_nothing(env, files):
    direct = _direct(env)
    for _ in range(3):
        assert _run(["apply", "blur", "rgb.png", "out.png"], direct, files).returncode == 0
    assert not list(_folder(env).glob("*.sock")) and not list(_folder(env).glob("*.uses"))


@pytest.mark.slow
def test_idle_workers_exit_and_stop_stops(env, files):
    env[resident.IDLE_ENV] = "2"
    _start(env, files)
    assert _wait(lambda: not list(_folder(env).glob("*.sock")), 30)
    assert "stopped" in _log(env)
    env[resident.IDLE_ENV] = "120"  # (another environment: another worker)
    _start(env, files)
    stopped = subprocess.run([sys.executable, "-m", "imgconv.resident", "stop"], env=env, capture_output=True, text=True)
    assert "1 resident worker asked to stop" in stopped.stdout
    assert _wait(lambda: not list(_folder(env).glob("*.sock")), 30)
    assert _wait(lambda: not any(_alive(pid) for pid in _workers(env)), 30)


@pytest.mark.slow
def test_a_worker_whose_socket_is_gone_exits(env, files):
    _start(env, files)
    worker = _workers(env)[-1]
    (path,) = _folder(env).glob("*.sock")
    path.unlink()  # as when the folder it lives in is deleted: nobody can reach it again
    assert _wait(lambda: not _alive(worker), resident._RECHECK_SECONDS + 30)


@pytest.mark.slow
def test_listing_and_help_never_start_a_worker(env, files):
    for _ in range(3):
        for args in (["list"], ["--help"], ["show", "blur"]):
            assert _run(args, env, files).returncode == 0
    assert not list(_folder(env).glob("*"))


# --- what a review found --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stopped_worker_does_not_hold_up_its_callers(env, files):
    _start(env, files)
    worker = _workers(env)[-1]
    served = _served(env)
    os.kill(worker, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = _run(["apply", "blur", "rgb.png", "alone.png"], env, files)
        assert done.returncode == 0 and (files / "alone.png").exists()
        assert time.monotonic() - started < 30
    finally:
        os.kill(worker, signal.SIGCONT)
    time.sleep(1.0)
    assert _served(env) == served  # the request it found when continued was given up: never run late
    assert _run(["apply", "blur", "rgb.png", "served.png"], env, files).returncode == 0
    assert _served(env) == served + 1


@pytest.mark.slow
def test_a_worker_killed_mid_command_takes_the_copy_with_it(env, files):
    _start(env, files)
    process = _long_command(env, files, "orphan.png")
    copy = _copies(env)[-1]
    os.kill(_workers(env)[-1], signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and b"resident worker stopped" in err
    assert _wait(lambda: not _alive(copy), 30)
    assert not (files / "orphan.png").exists()


@pytest.mark.slow
def test_a_copy_killed_outright_ends_its_caller_so(env, files):
    _start(env, files)
    process = _long_command(env, files, "killed.png")
    os.kill(_copies(env)[-1], signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL and err == b""


def _small_files():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


@pytest.mark.slow
def test_a_file_size_limit_fails_the_write_as_in_a_fresh_process(env, files):
    _start(env, files, preexec_fn=_small_files)
    outcomes = []
    for kind, environment in (("direct", _direct(env)), ("served", env)):
        served = _served(env)
        done = _run(["apply", "blur", "large.png", f"{kind}.png"], environment, files, preexec_fn=_small_files)
        assert _served(env) == served + (kind == "served")
        leftovers = sorted(path.name for path in files.iterdir() if kind in path.name)
        outcomes.append((done.returncode, done.stderr.decode().replace(kind, "OUT"), leftovers))
    assert outcomes[0] == outcomes[1] and outcomes[1][0] == 1 and outcomes[1][2] == [], outcomes


@pytest.mark.slow
def test_an_early_ctrl_c_is_never_lost(env, files):
    _start(env, files)
    for delay in (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
        process = subprocess.Popen(
            [*IMGCONV, "apply", "--kernel", "big.npy", "large.png", "early.png", "--strategy", "direct", "--threads", "1"],
            env=env, cwd=files, stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        interpreter_starting = process.returncode == 1 and b"Fatal Python error" in err  # Python's own start-up
        assert process.returncode in (130, -signal.SIGINT) or interpreter_starting, (delay, process.returncode, err)
        assert b"could not run" not in err
        assert not (files / "early.png").exists()


@pytest.mark.slow
def test_descriptors_named_in_arguments_run_here(env, files):
    _start(env, files)
    served = _served(env)
    with open(files / "rgb.png", "rb") as source:
        done = subprocess.run(
            [*IMGCONV, "apply", "blur", f"/dev/fd/{source.fileno()}", "from-fd.png"],
            env=env, cwd=files, capture_output=True, pass_fds=(source.fileno(),), timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert _served(env) == served and (files / "from-fd.png").exists()


@pytest.mark.slow
def test_start_up_warnings_mean_no_worker(env, files):
    env["NUMBA_NUM_THREADS"] = "abc"  # numba warns about it as it is imported
    direct = _run(["apply", "blur", "rgb.png", "direct.png"], _direct(env), files)
    for _ in range(4):
        done = _run(["apply", "blur", "rgb.png", "out.png"], env, files)
        assert (done.returncode, done.stderr) == (direct.returncode, direct.stderr)
        time.sleep(0.5)
    assert _wait(lambda: list(_folder(env).glob("*.failed")))
    assert _served(env) == 0 and _log(env).count("not started") == 1


@pytest.mark.slow
def test_interpreter_options_are_the_workers_too(env, files):
    command = [sys.executable, "-O", "-m", "imgconv", "apply", "sharpen", "rgb.png", "optimised.png"]
    for _ in range(2):
        assert subprocess.run(command, env=env, cwd=files, capture_output=True, timeout=120).returncode == 0
    assert _wait(lambda: _workers(env)), _log(env)
    served = _served(env)
    assert subprocess.run(command, env=env, cwd=files, capture_output=True, timeout=120).returncode == 0
    assert _served(env) == served + 1
    assert os.readlink(f"/proc/{_workers(env)[-1]}/cwd") == "/"  # never pins the caller's folder


def test_files_of_long_unused_identities_are_removed(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = Path(resident._folder())
    old, recent = folder / "0123456789abcdef", folder / "fedcba9876543210"
    for stem in (old, recent):
        for kind in (".uses", ".log", ".lock", ".failed"):
            Path(f"{stem}{kind}").write_text("")
    stale = time.time() - resident.FORGET_SECONDS - 60
    os.utime(f"{old}.uses", (stale, stale))
    resident._make_room(resident._paths("aaaaaaaaaaaaaaaa"))
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{recent.name}{kind}" for kind in (".uses", ".log", ".lock", ".failed"))


def _ignore_interrupts():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell does for a background job


def _ignored_signals(pid) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)


@pytest.mark.slow
def test_signals_the_caller_ignores_are_ignored_by_the_command(env, files):
    _start(env, files, preexec_fn=_ignore_interrupts)
    masks = []
    for kind, environment in (("direct", _direct(env)), ("served", env)):
        served = _served(env)
        process = subprocess.Popen(
            [*IMGCONV, "apply", "--kernel", "big.npy", "large.png", f"{kind}.png", "--strategy", "direct", "--threads", "1"],
            env=environment, cwd=files, stderr=subprocess.PIPE, preexec_fn=_ignore_interrupts,
        )
        if kind == "served":
            assert _wait(lambda: _served(env) == served + 1, 30)
        time.sleep(1.5)
        masks.append(_ignored_signals(_copies(env)[-1] if kind == "served" else process.pid))
        process.kill()
        process.wait()
    assert masks[0] == masks[1] and masks[1] & (1 << (signal.SIGINT - 1))
