"""The resident worker: ``imgconv apply`` and ``batch`` handed to a warm process instead of starting one.

A short ``imgconv apply`` spends most of its time starting Python's numpy, Pillow,
Click and numba and loading the compiled kernels, not filtering (docs/performance.md,
"Start-up"), and a batch pays that in its main process and, unless they are
forked from it, in each of its workers.  So once the same user has run ``apply``
or ``batch`` twice within ``USE_WINDOW`` seconds (and the compiled kernels are
cached), a detached worker process is started that has all of that imported and
loaded.  Later ``apply`` and ``batch`` commands (this module's :func:`main`, the ``imgconv`` entry point) connect to it
over a Unix socket in a folder only this user can open, and hand it their
arguments, working folder, environment and standard input, output and error
(the descriptors themselves).  The worker forks a copy of itself for each
command; the copy runs the very same command-line code a fresh process would,
writing straight to the caller's descriptors, and its exit status (or the
signal that ended it) becomes the caller's.  Signals the caller receives
(Ctrl-C, SIGTERM, SIGHUP, ...) are passed on to the copy; if the caller is
killed outright, so is the copy.

What makes the copy behave as a fresh process would:

- a worker serves only callers identical to the process that started it: the
  same interpreter, flags, ``sys.path``, imgconv, numba, numpy and Pillow files
  (sizes and modification times: an upgrade or an edit means a new worker),
  environment (but for the shell's bookkeeping, ``PWD`` and the like), user and
  groups, umask, nice value, CPU affinity, resource limits and cgroup.  The
  identity is checked again on every connection;
- the worker never filters anything itself (numba's OpenMP threads do not
  survive a fork, so they are started by each copy), and imports modules and
  loads numba's compiler state only; so a copy running ``batch`` forks its own
  workers at once (``batch/local.py``);
- the copy resets signal handling to Python's defaults, takes the caller's
  environment and working folder, and builds ``sys.stdin``/``stdout``/``stderr``
  on the caller's descriptors as Python itself would.

``IMGCONV_RESIDENT=off`` turns it off (nothing is started or used);
``IMGCONV_RESIDENT_IDLE`` sets how many seconds an idle worker waits before it
exits (default ``IDLE_SECONDS``).  ``python -m imgconv.resident status`` lists
this user's workers, ``python -m imgconv.resident stop`` stops them.

This module imports only a few built-in modules at the top (``imgconv list`` and
``--help`` pass through it), and the caller's side costs next to nothing.
"""

import os
import signal
import sys

#: The environment variable that turns the resident worker off (``off``, ``0``, ``no``).
RESIDENT_ENV = "IMGCONV_RESIDENT"
IDLE_ENV = "IMGCONV_RESIDENT_IDLE"
#: An idle worker exits after this many seconds without a command.
IDLE_SECONDS = 600.0
#: A worker is started when ``apply`` or ``batch`` runs a second time within this many seconds.
USE_WINDOW = 600.0
#: At most this many workers per user (one per distinct environment); starting
#: another asks the least recently used one to exit.
MAX_WORKERS = 3
#: The files of an identity not used for this long (an old install's, another environment's) are removed.
FORGET_SECONDS = 7 * 24 * 3600.0
_PROTOCOL = b"imgconv-resident-1"
_RECHECK_SECONDS = 30.0  # how often an idle worker checks that callers can still reach it
# A caller waits this long for a worker to take its request, then runs the command itself
# (nothing has run it yet: the worker forks only once the caller says "go").
_HANDSHAKE_SECONDS = 2.0
# A request not completed within this time is dropped (a caller that connected and stalled).
_REQUEST_SECONDS = 5.0
_LOG_BYTES = 1 << 20  # a worker's log is started afresh beyond this size
_SERVED_COMMANDS = ("apply", "batch")
# Environment entries a shell changes from one command to the next, which neither
# imgconv nor its libraries read: a worker serves callers that differ only in them.
_VOLATILE_ENV = ("PWD", "OLDPWD", "SHLVL", "_", "PYTEST_CURRENT_TEST")
# Signals whose default action ends the process: passed on to the copy running the command
# (not SIGPIPE: Python ignores it, and a closed pipe shows as EPIPE in the copy too).
_FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
_LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_STACK", "RLIMIT_CPU", "RLIMIT_CORE", "RLIMIT_NPROC")
_PACKAGES = ("numba", "numpy", "PIL", "click", "yaml", "llvmlite")

_served = False  # this process is a worker's copy running a caller's command


def enabled() -> bool:
    return os.environ.get(RESIDENT_ENV, "").strip().lower() not in ("off", "0", "no", "false")


def _wants_worker(args) -> bool:
    """The command (the first word that is not an option) is one a worker runs, and no
    argument names a descriptor or this process (``/dev/fd/3``, ``<(...)``, ``/proc/self/...``):
    only descriptors 0-2 and the working folder are handed over."""
    if any("/dev/fd/" in arg or arg.startswith("/proc/") for arg in args):
        return False
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--catalog":
            skip = True
        elif arg == "--":
            return False
        elif not arg.startswith("-"):
            return arg in _SERVED_COMMANDS
        elif arg in ("--help", "-h", "--version"):
            return False
    return False


# --- who may be served ---------------------------------------------------------------------------


def _file_stamp(path) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return f"{path}:-"
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"


def _package_stamps() -> list:
    """Sizes and times of imgconv's files and of its libraries' top modules (an
    upgrade or an edit of any of them must not be served by old code)."""
    here = os.path.dirname(os.path.abspath(__file__))
    stamps = []
    for folder, subfolders, names in os.walk(here):
        subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
        stamps.extend(_file_stamp(os.path.join(folder, name)) for name in sorted(names) if name.endswith((".py", ".yaml")))
    stamps.append(_file_stamp(os.path.join(os.path.dirname(here), "kernels.yaml")))
    for package in _PACKAGES:
        for entry in sys.path:
            candidate = os.path.join(entry or ".", package, "__init__.py")
            if os.path.exists(candidate):
                stamps.append(_file_stamp(os.path.abspath(candidate)))
                break
    return stamps


def _process_stamps() -> list:
    stamps = [f"uid={os.getuid()},{os.geteuid()} gid={os.getgid()},{os.getegid()} groups={sorted(os.getgroups())}"]
    mask = os.umask(0o022)
    os.umask(mask)
    stamps.append(f"umask={mask:o} nice={os.getpriority(os.PRIO_PROCESS, 0)}")
    if hasattr(os, "sched_getaffinity"):
        stamps.append(f"cpus={sorted(os.sched_getaffinity(0))}")
    import resource

    stamps.extend(f"{name}={resource.getrlimit(getattr(resource, name))}" for name in _LIMITS if hasattr(resource, name))
    try:
        with open("/proc/self/cgroup", encoding="utf-8", errors="replace") as group:
            stamps.append(group.read())
    except OSError:
        pass
    for namespace in ("mnt", "pid", "user"):  # a caller in a container or unshare sees other files
        try:
            stamps.append(f"{namespace}={os.readlink(f'/proc/self/ns/{namespace}')}")
        except OSError:
            pass
    root = os.stat("/")
    stamps.append(f"root={root.st_dev}:{root.st_ino}")  # a chroot
    return stamps


def identity() -> bytes:
    """Everything a worker's answers could depend on, as this process sees it."""
    flags = {name: getattr(sys.flags, name) for name in dir(sys.flags) if not name.startswith("_") and name not in ("count", "index", "safe_path")}
    environment = sorted((key, value) for key, value in os.environ.items() if key not in _VOLATILE_ENV)
    parts = [
        _PROTOCOL.decode(),
        sys.executable,
        sys.version,
        repr(sorted(flags.items())),
        repr(sys._xoptions),
        repr(sys.warnoptions),
        repr(sys.path),
        repr(environment),
        *_process_stamps(),
        *_package_stamps(),
    ]
    return "\n".join(parts).encode("utf-8", "surrogateescape")


def _digest(data: bytes) -> str:
    import zlib

    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def _folder():
    """This user's private folder for workers' sockets, or None when there is none
    that only this user can enter (then no worker is used)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp"
    folder = os.path.join(base, f"imgconv-{os.getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        info = os.lstat(folder)
    except OSError:
        return None
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return folder


def _paths(key: str):
    folder = _folder()
    if folder is None:
        return None
    return {kind: os.path.join(folder, f"{key}.{kind}") for kind in ("sock", "lock", "uses", "log", "failed")}


# --- the caller's side ---------------------------------------------------------------------------


def _send_message(connection, payload: bytes) -> None:
    """``payload`` after its length (the worker reads requests in pieces, as they come)."""
    import struct

    connection.sendall(struct.pack("!I", len(payload)) + payload)


_start = None  # (identity, environment, sys.path) as this process started, before any import changed them


def _remember_start() -> bytes:
    """This process's identity as it started (imgconv sets ``NUMBA_CACHE_DIR`` in the
    environment, imports may extend ``sys.path``): callers and workers compare these."""
    global _start
    if _start is None:
        _start = (identity(), dict(os.environ), list(sys.path))
    return _start[0]


class _Forwarder:
    """Signals this process receives while a worker's copy runs its command, passed on."""

    def __init__(self):
        self.connection = None
        self.pending = []
        self.previous = {}
        for name in _FORWARDED:
            number = getattr(signal, name, None)
            if number is not None and not _ignored(number):  # (ignored: a direct run never gets it either)
                self.previous[number] = signal.signal(number, self._forward)
        if signal.getsignal(signal.SIGTSTP) is signal.SIG_DFL:
            self.previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._suspend)

    def _suspend(self, number, frame):
        """Ctrl-Z: the copy stops with this process (SIGSTOP: it has no terminal of its
        own) and goes on when this process is continued (``fg``, ``bg``)."""
        attached = self.connection is not None
        if attached:
            self._forward(signal.SIGSTOP, frame)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # returns once continued
        signal.signal(signal.SIGTSTP, self._suspend)
        if attached:
            self._forward(signal.SIGCONT, frame)

    def _forward(self, number, frame):
        if self.connection is None:
            self.pending.append(number)
            return
        try:
            self.connection.sendall(b"k" + bytes([number]))
        except OSError:
            pass

    def attach(self, connection):
        self.connection = connection
        for number in self.pending:
            self._forward(number, None)

    def restore(self):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def run_here(self):
        """No worker runs the command: end as a signal caught meanwhile says, else run it here."""
        self.restore()
        for number in self.pending:
            _die_like(number)
        return None


def _die_like(number: int) -> None:
    try:
        signal.signal(number, signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL and SIGSTOP have no handler to reset
    os.kill(os.getpid(), number)
    os._exit(128 + number)


def _ignored(number) -> bool:
    try:
        return signal.getsignal(number) is signal.SIG_IGN
    except (OSError, ValueError):
        return False


def serve_call(args):
    """Run ``args`` in this user's worker: returns the exit status to end with
    (a negative number: the signal the command died of), or None when no worker
    took the command (then it runs in this process, as if there were none)."""
    if not enabled() or not _wants_worker(args):
        return None
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return None  # a closed standard descriptor: run here, where it is handled as ever
    import marshal
    import socket
    import time

    try:
        mine = _remember_start()
        ignored = [int(n) for n in signal.valid_signals() if _ignored(n)]
        payload = marshal.dumps((_PROTOCOL, mine, list(sys.argv), dict(os.environ), ignored))
        paths = _paths(_digest(mine))
    except (OSError, ValueError):
        return None
    if paths is None:
        return None
    try:
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the copy works in this very folder
    except OSError:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    forwarder = _Forwarder()
    status = b""
    try:
        try:
            connection.settimeout(_HANDSHAKE_SECONDS)
            connection.connect(paths["sock"])
            _send_message(connection, payload)
            ready = connection.recv(1)
        except OSError:  # no worker, a stale socket, a stopped or busy one (a timeout)
            ready = b""
        if ready != b"?":
            return forwarder.run_here()  # not taken (a stale socket, another identity, a worker stopping)
        try:
            # The descriptors go with "go", not before: a worker that stalls before its "?"
            # must not hold the caller's pipes open (a reader waiting for their end).
            if forwarder.pending or socket.send_fds(connection, [b"g"], [0, 1, 2, here]) != 1:
                return forwarder.run_here()
        except OSError:
            return forwarder.run_here()  # the worker went away before it could fork
        connection.settimeout(0.1)
        deadline = time.monotonic() + _HANDSHAKE_SECONDS
        started = b""
        while True:  # "+": the copy runs
            try:
                started = connection.recv(1)
                break
            except TimeoutError:
                for number in forwarder.pending:
                    _die_like(number)  # (closing the connection ends a copy forked meanwhile)
                if time.monotonic() > deadline:
                    break  # a stalled worker: forks nothing for a caller that has hung up
            except OSError:
                break
        if started in (b"", b"-"):
            connection.close()  # before running here: the worker must see this caller gone
            return forwarder.run_here()
        if started == b"+":
            connection.settimeout(None)
            forwarder.attach(connection)
            while not status.endswith(b"\n"):
                chunk = connection.recv(64)
                if not chunk:
                    break
                status += chunk
    finally:
        forwarder.restore()
        connection.close()
        os.close(here)
    if not status.endswith(b"\n"):
        print("imgconv: the resident worker stopped before the command ended (IMGCONV_RESIDENT=off runs without it)", file=sys.stderr)
        return 1
    kind, value = status[:1], int(status[1:-1])
    return value if kind == b"x" else -value


def main():
    """The ``imgconv`` command: ``apply`` and ``batch`` through this user's worker when there is one
    for this very environment, every command in this process otherwise."""
    status = serve_call(sys.argv[1:])
    if status is None:
        from imgconv.cli import main as command_line

        return command_line()
    if status < 0:
        _die_like(-status)
    os._exit(status)


# --- starting a worker ---------------------------------------------------------------------------


def note_use(args) -> None:
    """Called by the command line after a command it ran in this process: on the
    second ``apply`` or ``batch`` within ``USE_WINDOW`` seconds, start a worker (detached) for
    the commands that follow."""
    if _served or _start is None or not enabled() or not _wants_worker(args):
        return  # (_start: the command came in through main, which noted how the process started)
    try:
        from imgconv.engine import compiled

        if compiled.policy() != compiled.FOREGROUND and not compiled.ready():
            return  # the kernels are still being compiled: a worker would compile them again
        paths = _paths(_digest(_start[0]))
        if paths is None:
            return
        import time

        now = time.time()
        try:
            recent = now - os.stat(paths["uses"]).st_mtime < USE_WINDOW
        except OSError:
            recent = False
        with open(paths["uses"], "a"):
            pass
        os.utime(paths["uses"], (now, now))
        if recent and not os.path.exists(paths["failed"]) and not _worker_running(paths):
            _make_room(paths)
            _start_worker(paths)
    except OSError:
        pass  # no worker: every command runs in its own process, as ever


def _lock(handle) -> bool:
    from imgconv.engine.compiled import _lock as take_lock  # the compile lock's helper

    return take_lock(handle)


def _worker_running(paths) -> bool:
    """A worker holds its lock file for as long as it lives (starting included)."""
    with open(paths["lock"], "a") as handle:
        return not _lock(handle)


def _workers(folder):
    """(last use, socket path) of every worker socket in ``folder``."""
    found = []
    for name in os.listdir(folder):
        if name.endswith(".sock"):
            path = os.path.join(folder, name)
            try:
                found.append((os.stat(path[: -len(".sock")] + ".uses").st_mtime, path))
            except OSError:
                found.append((0.0, path))
    return sorted(found)


def _make_room(paths) -> None:
    """Ask the least recently used workers to exit, keeping at most MAX_WORKERS, and
    remove the files of identities unused for ``FORGET_SECONDS`` (an old install's)."""
    import time

    folder = os.path.dirname(paths["sock"])
    workers = _workers(folder)
    for _, path in workers[: max(0, len(workers) - MAX_WORKERS + 1)]:
        _ask_to_stop(path)
    for name in os.listdir(folder):
        stem, kind = os.path.splitext(os.path.join(folder, name))
        try:
            if kind != ".uses" or time.time() - os.stat(stem + kind).st_mtime < FORGET_SECONDS:
                continue
            handle = open(stem + ".lock", "r")  # never made here: only a worker makes its lock
        except OSError:
            continue  # removed meanwhile by another caller, or no lock to take
        with handle:
            if not _lock(handle):
                continue  # its worker still runs
            for leftover in (".sock", ".log", ".failed", ".uses", ".lock"):
                try:
                    os.unlink(stem + leftover)
                except OSError:
                    pass


def _ask_to_stop(path) -> bool:
    import marshal
    import socket

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(2.0)
        connection.connect(path)
        _send_message(connection, marshal.dumps((_PROTOCOL, b"stop")))
        return connection.recv(1) == b"+"
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)  # nobody listens: a worker that died without cleaning up
        except OSError:
            pass
        return False
    except OSError:
        return False  # a slow or stopped worker: it may still serve
    finally:
        connection.close()


def _start_worker(paths) -> None:
    import subprocess

    _, environment, path = _start
    # The caller's own sys.path (so the same imgconv and libraries), not the working folder's (-P).
    code = f"import sys; sys.path[:] = {path!r}; from imgconv.resident import worker_main; worker_main({paths['sock']!r})"
    flags = [flag for flag in subprocess._args_from_interpreter_flags() if flag != "-P"]  # -O, -W, -X, ...
    try:
        large = os.stat(paths["log"]).st_size > _LOG_BYTES
    except OSError:
        large = False
    with open(paths["log"], "wb" if large else "ab") as log:
        child = subprocess.Popen(
            [sys.executable, *flags, "-P", "-c", code],
            cwd="/",  # never the caller's folder: it must stay free to unmount
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=environment,
            close_fds=True,  # no pipe of the caller's held open by the worker
            start_new_session=True,  # not the caller's terminal, not its Ctrl-C
        )
    child.returncode = 0  # detached by design: never waited for by this process


# --- the worker ----------------------------------------------------------------------------------


def _warm_up() -> list:
    """Import what ``apply`` and ``batch`` use and set up numba's compiler state, without running
    a parallel kernel (its OpenMP threads would not survive the fork).  Returns the
    warnings shown meanwhile (a copy would not show them again: then no worker)."""
    import warnings

    shown, show = [], warnings.showwarning
    # Not catch_warnings: that would also undo the filters the libraries install at import.
    warnings.showwarning = lambda message, category, *rest, **options: shown.append(f"{category.__name__}: {message}")
    try:
        import imgconv.cli  # noqa: F401 - imported for the copies
        import imgconv.batch.local  # noqa: F401
        from imgconv import chain, io, pipeline  # noqa: F401

        pipeline.warm_up()
    finally:
        warnings.showwarning = show
    return shown


def _log(message: str) -> None:
    import time

    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {message}", file=sys.stderr, flush=True)


def worker_main(sock_path: str) -> None:
    """Run a worker that listens on ``sock_path``, until idle for the idle time."""
    import socket

    import gc

    stem = sock_path[: -len(".sock")]
    lock = open(stem + ".lock", "a")
    if not _lock(lock):
        return  # another worker for this identity is starting or running
    mine = identity()
    failed = stem + ".failed"
    if _digest(mine) != os.path.basename(stem):
        _give_up(failed, "this process differs from the caller that asked for it")
        return
    try:
        shown = _warm_up()
    except Exception as exc:  # noqa: BLE001 - logged; commands then run in their own processes
        _give_up(failed, f"warming up failed: {type(exc).__name__}: {exc}")
        return
    if shown:
        _give_up(failed, f"starting up shows warnings that its copies would not repeat: {'; '.join(shown)}")
        return
    gc.collect()
    gc.freeze()  # the copies share these pages: the collector never touches them again
    try:
        os.unlink(sock_path)  # a socket left by a worker that died: we hold the lock now
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    _log(f"listening on {sock_path}")
    worker = _Worker(listener, mine, lock, sock_path, os.stat(sock_path).st_ino)
    try:
        worker.loop()
    finally:
        if worker._reachable():  # still this worker's socket (not a successor's)
            try:
                os.unlink(sock_path)
            except OSError:
                pass
        _log("stopped")
        os._exit(0)  # nothing left to write: skip tearing down numba's objects


def _give_up(failed: str, reason: str) -> None:
    """No worker for this identity (its callers run commands themselves); not tried again."""
    _log(f"not started: {reason}")
    try:
        with open(failed, "w") as note:
            note.write(reason + "\n")
    except OSError:
        pass


def _idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(IDLE_ENV, IDLE_SECONDS)))
    except ValueError:
        return IDLE_SECONDS


class _Request:
    """A caller's request as it arrives: bytes, descriptors, and once whole, its message."""

    def __init__(self, since: float):
        self.since, self.data, self.fds, self.message = since, bytearray(), [], None


class _Worker:
    """The worker's loop: accept callers, fork a copy per command, pass signals on,
    report each copy's end to its caller."""

    def __init__(self, listener, mine: bytes, lock, sock_path: str, bound: int):
        import selectors
        import time

        self.listener, self.identity, self.lock = listener, mine, lock
        self.sock_path, self.bound = sock_path, bound
        self.selector = selectors.DefaultSelector()
        self.children = {}  # pid -> connection of its caller (the selector holds the pid beside it)
        self.requests = {}  # connection -> _Request, until the copy is forked
        self.pid = os.getpid()
        self.stopping = False
        self.last = time.monotonic()  # when the worker was last busy: the idle time counts from it
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, self._note_signal)
        self.selector.register(listener, 1, "listen")
        self.selector.register(self.wake_read, 1, "wake")

    def _reachable(self) -> bool:
        """Callers can still find this worker: its socket is where it was bound (a removed
        folder, a temporary one deleted, would leave it waiting for nobody)."""
        try:
            return os.stat(self.sock_path).st_ino == self.bound
        except OSError:
            return False

    def _note_signal(self, number, frame):
        if number != signal.SIGCHLD:
            self.stopping = True  # finish the commands running, accept no more

    def loop(self) -> None:
        import time

        idle = _idle_seconds()
        while True:
            if self.stopping and self.listener is not None:
                self.selector.unregister(self.listener)
                self.listener.close()
                self.listener = None
            if self.children:
                timeout = None  # busy: its copies end it (the idle time counts from then)
            elif self.stopping:
                return
            else:  # requests that never came to a command do not keep it alive
                timeout = self.last + idle - time.monotonic()
                if timeout <= 0 or not self._reachable():
                    return
                timeout = min(timeout, _RECHECK_SECONDS)
            if self.requests:
                timeout = _REQUEST_SECONDS if timeout is None else min(timeout, _REQUEST_SECONDS)
            for key, _ in self.selector.select(timeout):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    try:
                        os.read(self.wake_read, 512)
                    except BlockingIOError:
                        pass
                elif key.data == "request":
                    self._from_requester(key.fileobj)
                else:
                    self._from_caller(key.fileobj, key.data)
            self._reap()
            self._drop_stale_requests()

    def _accept(self) -> None:
        """A new caller: its request is read as it arrives, never blocking the others."""
        import time

        try:
            connection, _ = self.listener.accept()
        except OSError:
            time.sleep(0.05)  # out of descriptors (EMFILE): the listener stays readable; do not spin
            return
        try:
            if not self._same_user(connection):
                raise ConnectionError("a caller of another user")
            connection.setblocking(False)
        except OSError:
            connection.close()
            return
        self.requests[connection] = _Request(time.monotonic())
        self.selector.register(connection, 1, "request")

    def _drop_request(self, connection) -> None:
        """Forget a request that will not run; a caller that was told "?" hears "-" (it then
        runs the command itself)."""
        request = self.requests.pop(connection, None)
        if request is not None and request.message is not None:
            try:
                connection.send(b"-")
            except OSError:
                pass
        if request is not None:
            for fd in request.fds:
                os.close(fd)
        try:
            self.selector.unregister(connection)
        except (KeyError, ValueError):
            pass
        connection.close()

    def _drop_stale_requests(self) -> None:
        import time

        now = time.monotonic()  # (since the last byte: a request arriving slowly is not stale)
        for connection in [c for c, r in self.requests.items() if now - r.since > _REQUEST_SECONDS]:
            self._drop_request(connection)

    def _from_requester(self, connection) -> None:
        """More of a request: when whole, answer "?" (or "-"); on the caller's "g", fork."""
        import marshal
        import socket
        import struct

        import time

        request = self.requests[connection]
        try:
            data, fds, _, _ = socket.recv_fds(connection, 1 << 16, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        request.fds.extend(fds)
        request.since = time.monotonic()
        if not data:
            self._drop_request(connection)  # the caller gave up (or was never one)
            return
        if request.message is not None:  # the request was whole: this is the caller's answer
            if data == b"g" and len(request.fds) == 4:
                self._fork(connection, request)
            else:
                self._drop_request(connection)
            return
        request.data += data
        if len(request.data) < 4 or len(request.data) < 4 + struct.unpack("!I", request.data[:4])[0]:
            return
        try:
            message = marshal.loads(bytes(request.data[4:]))
            if message[0] != _PROTOCOL:
                raise ValueError("another protocol")
            if message[1] == b"stop":
                self.stopping = True
                connection.sendall(b"+")
                raise ValueError("asked to stop")
            _, theirs, args, environment, ignored = message
            if theirs != self.identity or request.fds:
                connection.sendall(b"-")
                raise ValueError("a caller this worker does not serve")
            request.message = (args, environment, ignored)
            connection.sendall(b"?")
        except (OSError, ValueError, EOFError, TypeError, IndexError):
            self._drop_request(connection)

    def _fork(self, connection, request) -> None:
        import socket

        try:
            gone = connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        if gone:  # the caller gave up after its "go" (a worker that stalled): no copy for nobody
            self._drop_request(connection)
            return
        # Signals are held until the copy has Python's own handlers (not the worker's).
        held = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
        except OSError:
            pid = None
        if pid == 0:
            self._run_in_copy(connection, request.fds, *request.message, held)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pid is None:  # no copy (out of processes or memory): the caller runs the command itself
            self._drop_request(connection)
            return
        try:  # (the copy does it too: whichever runs first)
            os.setpgid(pid, pid)
        except OSError:
            pass
        del self.requests[connection]
        for fd in request.fds:
            os.close(fd)
        _log(f"a command runs in copy {pid}")
        self.children[pid] = connection
        self.selector.modify(connection, 1, pid)
        try:
            connection.sendall(b"+")
        except OSError:
            pass

    @staticmethod
    def _same_user(connection) -> bool:
        import socket
        import struct

        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", credentials)
        return uid == os.getuid()

    def _from_caller(self, connection, pid: int) -> None:
        try:
            data = connection.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the caller is gone (killed outright): so goes its command
            self.selector.unregister(connection)
            _signal_child(pid, signal.SIGKILL)
            _signal_child(pid, signal.SIGCONT, group=True)  # stopped workers of its own then see it go
            return
        for index in range(0, len(data) - 1, 2):
            if data[index : index + 1] == b"k":
                number = data[index + 1]
                # Stopping and continuing act on the command's whole group, as a terminal's do.
                _signal_child(pid, number, group=number in (signal.SIGSTOP, signal.SIGCONT))

    def _reap(self) -> None:
        import time

        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.children.pop(pid, None)
            if connection is None:
                continue
            self.last = time.monotonic()
            if os.WIFSIGNALED(status):
                report = b"s%d\n" % os.WTERMSIG(status)
            else:
                report = b"x%d\n" % os.waitstatus_to_exitcode(status)
            try:
                self.selector.unregister(connection)
            except (KeyError, ValueError):
                pass
            try:
                connection.sendall(report)
            except OSError:
                pass
            connection.close()

    def _run_in_copy(self, connection, fds, args, environment, ignored, held) -> None:
        """In the forked copy: become the caller's process, run the command, exit."""
        global _served
        try:
            _served = True
            _end_with(self.pid)
            # A process group of its own: Ctrl-Z stops the copy and whatever it starts (a
            # batch's workers), as the terminal stops a command's whole group.
            try:
                os.setpgid(0, 0)
            except OSError:
                pass
            signal.set_wakeup_fd(-1)
            for number in signal.valid_signals():
                if number in (signal.SIGKILL, signal.SIGSTOP):
                    continue
                try:
                    signal.signal(number, signal.SIG_DFL)
                except (OSError, ValueError, RuntimeError):
                    pass
            # As Python sets them up at start-up:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_IGN)
            for number in ignored:  # what the caller inherited ignored (nohup, a background job)
                try:
                    signal.signal(number, signal.SIG_IGN)
                except (OSError, ValueError):
                    pass
            self.selector.close()
            if self.listener is not None:
                self.listener.close()
            for other in [*self.children.values(), *self.requests]:
                other.close()
            connection.close()
            os.close(self.wake_read)
            os.close(self.wake_write)
            self.lock.close()  # the next worker must not wait for this command to end
            *standard, here = fds
            for target, fd in enumerate(standard):
                os.dup2(fd, target)
            os.fchdir(here)
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            _standard_streams()
            os.environ.clear()
            os.environ.update(environment)
            sys.argv = list(args)
            from imgconv.engine import compiled

            compiled.numba_preloaded()  # small images: numpy beats loading the kernels here
        except BaseException as exc:  # noqa: BLE001 - cannot become the caller: say so and end
            os.write(2, f"imgconv: the resident worker could not run the command: {exc}\n".encode())
            os._exit(1)
        _run_command(held)


def _end_with(worker: int) -> None:
    """The copy is killed if the worker dies (Linux): its caller has then lost its status."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, ImportError):
        return
    if os.getppid() != worker:  # the worker died before the line above
        os._exit(1)


def _signal_child(pid: int, number: int, group: bool = False) -> None:
    """Signal a copy (``group``: its process group, the copy and what it started)."""
    try:
        if group:
            try:
                os.killpg(pid, number)
                return
            except ProcessLookupError:
                pass  # its group is not made yet: the copy alone
        os.kill(pid, number)
    except (OSError, ValueError, OverflowError):
        pass


def _standard_streams() -> None:
    """sys.stdin, stdout and stderr on descriptors 0-2, made as Python makes them at start-up."""
    import io

    unbuffered = bool(sys.flags.unbuffered) if hasattr(sys.flags, "unbuffered") else bool(os.environ.get("PYTHONUNBUFFERED"))
    made = []
    for fd, old in ((0, sys.__stdin__), (1, sys.__stdout__), (2, sys.__stderr__)):
        encoding = getattr(old, "encoding", None) or "utf-8"
        errors = getattr(old, "errors", None) or ("backslashreplace" if fd == 2 else "strict")
        reading = fd == 0
        raw = io.FileIO(fd, "rb" if reading else "wb", closefd=False)
        if unbuffered and not reading:
            buffer = raw
        else:
            buffer = io.BufferedReader(raw) if reading else io.BufferedWriter(raw)
        interactive = raw.isatty()
        stream = io.TextIOWrapper(
            buffer,
            encoding=encoding,
            errors=errors,
            newline="\n",
            line_buffering=(not reading) and (fd == 2 or interactive),
            write_through=unbuffered and not reading,
        )
        stream.mode = "r" if reading else "w"
        made.append(stream)
    sys.stdin, sys.stdout, sys.stderr = made
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = made


def _run_command(held) -> None:
    """The command line, ended as the command line ends any process with numba loaded
    (``cli._fast_exit``); the signals held since the fork are let through first: they act
    as on a process that just started."""
    import traceback

    from imgconv import cli

    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        cli.main()  # (ends the process itself)
        code = 0
    except SystemExit as done:
        code = done.code
    except KeyboardInterrupt:  # before the command's own handling: as the interpreter does
        traceback.print_exc()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        _die_like(signal.SIGINT)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    cli._fast_exit(code)


# --- python -m imgconv.resident status | stop ---------------------------------------------------


def _cli(argv) -> int:
    action = argv[0] if argv else "status"
    folder = _folder()
    if action not in ("status", "stop"):
        print("usage: python -m imgconv.resident [status | stop]", file=sys.stderr)
        return 2
    workers = _workers(folder) if folder else []
    if action == "stop":
        stopped = sum(_ask_to_stop(path) for _, path in workers)
        print(f"{stopped} resident worker{'s' if stopped != 1 else ''} asked to stop")
        return 0
    if not workers:
        print("no resident worker")
    for _, path in workers:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
