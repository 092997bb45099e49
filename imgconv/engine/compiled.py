"""Whether the compiled CPU kernels are in numba's on-disk cache, and compiling them
off the user's wait.

Compiling ``engine/cpu.py``'s kernels for the common dtypes takes tens of seconds
(docs/performance.md, "Start-up"); once cached, loading them takes a fraction of
a second.  So that the first command after installing does not wait for that:

- while they are not cached, the CPU routes run ``engine/vector.py``, the same
  sums in numpy (bit for bit the same results, slower on large images), and
  a background process compiles the kernels into the cache
  (``python -m imgconv.engine.compiled``: at the lowest priority, one at a time
  per cache folder, its messages in ``compile.log`` there); when it is done it writes
  a marker file, and from then on the compiled kernels run;
- while numba is not yet imported, passes run in numpy too as long as the numpy
  work done in this process stays within ``tunables.VECTOR_MAX_WORK`` (about what
  importing numba and loading its kernels costs): one photo or a few small images
  never wait for numba, and a long chain imports it after a pass (the rent-or-buy
  rule: never more than twice the better choice's time); batch workers, which
  filter many files, skip the budget (``expect_many_images``); a resident worker's
  copy, which has numba imported but no kernel loaded, has the smaller budget
  ``tunables.VECTOR_COPY_MAX_WORK``.

``IMGCONV_COMPILE=foreground`` turns both off: the compiled kernels always run,
compiled on first use in the calling process (the wait is then the caller's).
The marker is keyed on everything numba's cached code depends on (the engine's
sources, the Python and numba versions, the CPU, numba's code-generation
settings), so an upgrade or an edit compiles afresh.  This module does not
import numba.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from imgconv.engine._cache import configure_numba_cache

#: The environment variable that chooses how kernels get compiled.
COMPILE_ENV = "IMGCONV_COMPILE"
BACKGROUND, FOREGROUND = "background", "foreground"

# numba settings that change the code it generates (and so its cache's validity).
_CODEGEN_ENV = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_OPT", "NUMBA_BOUNDSCHECK", "NUMBA_FASTMATH", "NUMBA_DEBUGINFO")

_ready = False  # once the marker is seen it stays valid for this process
_started = False  # a background compile was started (or found running) by this process
_vector_work = 0.0  # multiply-adds run in numpy by this process while numba was not imported
_child = None  # the pid of the background compile this process started, until reaped
_keys = {}  # cache_key() per code-generation setting
_numba_preloaded = False  # see numba_preloaded


def policy() -> str:
    """``background`` (the default) or ``foreground``, from ``IMGCONV_COMPILE``."""
    value = os.environ.get(COMPILE_ENV, "").strip().lower()
    return FOREGROUND if value == FOREGROUND else BACKGROUND


def _cpu_model() -> str:
    """The CPU as numba's code generation sees it, cheaply: the first processor's model name,
    family, model and flags (a VM may name Zen 3 and Zen 5 hosts alike, "AMD EPYC", while
    numba compiles AVX-512 code for one and not the other, and keys its cache to that)."""
    fields = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if not line.strip():
                    break  # the first processor's block only
                if line.startswith(("model name", "cpu model", "Processor", "cpu family", "model\t", "flags", "Features")):
                    fields.append(line.strip())
    except OSError:
        pass
    return "\n".join(fields) or platform.processor()


def cache_key() -> str:
    """sha256 (16 hex) of what the cached compiled code depends on (worked out once per
    process and code-generation setting: it reads the engine's sources)."""
    settings = (__file__, *(os.environ.get(name, "") for name in _CODEGEN_ENV))
    if _keys.get(settings) is None:
        _keys[settings] = _cache_key()
    return _keys[settings]


def _cache_key() -> str:
    # numba's cache entries are per source path too: another install sharing the folder
    # (NUMBA_CACHE_DIR, the per-user fallback) has kernels of its own to compile.
    engine = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"{sys.version}\0{platform.machine()}\0{_cpu_model()}\0{engine}".encode())
    # numba's version, from its own file (importlib.metadata costs more than the rest of this check).
    spec = importlib.util.find_spec("numba")
    if spec is not None and spec.origin:
        try:
            digest.update(Path(spec.origin).with_name("_version.py").read_bytes())
        except OSError:
            digest.update(spec.origin.encode())
    for name in _CODEGEN_ENV:
        digest.update(f"\0{name}={os.environ.get(name, '')}".encode())
    # numba checks only the timestamp of a kernel's own file; code compiled in from the
    # engine's other files must invalidate the marker too.
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _paths() -> tuple[Path, Path, Path]:
    """(marker, lock, log) in the folder numba caches the engine's kernels in.

    Raises
    ------
    OSError
        The folder cannot be made or written (numba then caches elsewhere or not at all).
    """
    folder = Path(configure_numba_cache())
    folder.mkdir(parents=True, exist_ok=True)  # numba makes it when it first caches; the lock needs it now
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to {folder}")
    return folder / f"imgconv-compiled-{cache_key()}.json", folder / "imgconv-compile.lock", folder / "compile.log"


def ready() -> bool:
    """The compiled kernels are cached for this installation (or compiling them in the
    background failed, or there is no folder to mark: then they compile where they are
    used, as under ``foreground``)."""
    global _ready
    if not _ready:
        try:
            _ready = _paths()[0].exists()
        except OSError:
            _ready = True
    return _ready


def _lock(handle) -> bool:
    """Take an exclusive lock on the open ``handle`` without waiting (the compile lock, a
    resident worker's): False when another process holds it (True where there is no
    flock: the marker, or the socket, decides alone)."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _compile_running(lock: Path) -> bool:
    try:
        with open(lock, "a") as handle:  # closing it lets go of the lock again
            return not _lock(handle)
    except OSError:
        return False


def start_background() -> None:
    """Start the background compile detached, unless one is running."""
    global _started, _child
    if _started:
        return
    _started = True
    try:
        marker, lock, log = _paths()
        if _compile_running(lock):
            return
        # This very imgconv (whatever sys.path found it), and not the working folder's
        # modules (-P): the child compiles the kernels this process would load.
        package_parent = str(Path(__file__).resolve().parents[2])
        code = f"import sys; sys.path.insert(0, {package_parent!r}); from imgconv.engine.compiled import main; sys.exit(main())"
        with open(log, "ab") as output:
            child = subprocess.Popen(
                [sys.executable, "-P", "-c", code],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                close_fds=True,  # no pipe of ours (a batch's, multiprocessing's) held open for minutes
                start_new_session=True,  # not the user's Ctrl-C, not their terminal
            )
        # The child outlives this process by design: it is reaped by _reap (while we live),
        # so Popen must not count it as its own, still running (it would warn at exit).
        _child, child.returncode = child.pid, 0
    except (OSError, TypeError, ValueError):  # no interpreter path, no log folder, ...
        pass  # no compile in the background: the numpy route still gives the answer


def _reap() -> None:
    """Collect the finished background compile (a long-lived process would keep a zombie)."""
    global _child
    try:
        if os.waitpid(_child, os.WNOHANG)[0]:
            _child = None
    except (ChildProcessError, OSError):
        _child = None


def expect_many_images() -> None:
    """This process will filter many images (a batch worker): once they are cached, the
    compiled kernels run from the first pass (the numpy budget would only delay them)."""
    global _vector_work
    _vector_work = float("inf")


def use_vector(strategy: str, work: float) -> bool:
    """Run the CPU ``strategy`` in numpy (``engine/vector.py``) rather than the compiled kernels.

    ``work`` is the number of multiply-adds the pass needs.
    """
    global _vector_work, _numba_preloaded

    if _child is not None:
        _reap()
    if policy() == FOREGROUND:
        return False
    if not ready():
        start_background()
        return True
    if _within_budget(strategy, work):
        _vector_work += work
        return True
    if strategy != "fft":  # over the budget: the kernels are loaded now, every later pass runs them
        _numba_preloaded = False
    return False


def would_use_vector(strategy: str, work: float) -> bool:
    """What :func:`use_vector` would answer now, with nothing started or counted (for
    choosing a layout before the pass runs)."""
    if policy() == FOREGROUND:
        return False
    if not ready():
        return True
    return _within_budget(strategy, work)


def _within_budget(strategy: str, work: float) -> bool:
    """With the kernels cached: whether numpy may still take this pass (the budget of work
    that costs less in numpy than loading the kernels)."""
    if strategy == "fft" or ("numba" in sys.modules and not _numba_preloaded):
        return False
    from imgconv import tunables

    budget = tunables.VECTOR_COPY_MAX_WORK if _numba_preloaded else tunables.VECTOR_MAX_WORK
    return _vector_work + work <= budget


def numba_preloaded() -> None:
    """This process got numba imported but no kernel loaded (a resident worker's copy): a
    little numpy work still beats loading the kernels (``tunables.VECTOR_COPY_MAX_WORK``)."""
    global _numba_preloaded
    _numba_preloaded = True


# --- the background compile ---------------------------------------------------------------------


def compile_kernels() -> list[str]:
    """Compile (or load) every CPU kernel signature the catalog's filters use: uint8,
    uint16 and float32 rows to their own dtype and to float32, direct and separable,
    and the FFT's gather and store.  Returns the signatures, as text."""
    import numpy as np

    from imgconv.engine import cpu
    from imgconv.engine.finish import FLOAT32, Finish
    from imgconv.engine.plan import make_plan

    gaussian = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])
    direct = make_plan(np.array([[0.0, -1, 0], [-1, 5, -1], [0, -1, 0]]), (8, 8), strategy="direct")
    separable = make_plan(gaussian, (8, 8), strategy="separable")
    for dtype in (np.uint8, np.uint16, np.float32):
        rows = np.zeros((8, 8 * 3), dtype)
        # float32 rows to 8 and 16 bits: the last step of a chain (engine/stream.py).
        finishes = {Finish(dtype), FLOAT32} | ({Finish(np.uint8), Finish(np.uint16)} if dtype == np.float32 else set())
        for finish in finishes:
            cpu.run_direct(direct, rows, 3, "reflect", 0.0, finish, 1)
            cpu.run_separable(separable, rows, 3, "reflect", 0.0, finish, 1)
        cpu.gather_region(rows, np.arange(8), np.arange(8), 3, 0, np.float32(0), np.empty((8, 8), np.float32))
        if dtype != np.float32:  # the FFT's store into 8- and 16-bit results (a view of its tile buffer)
            cpu.store_tile(rows, np.zeros((8, 10), np.float32)[:, 1:9], 0, 0, 3, 0, Finish(dtype).spec())
    kernels = (cpu._direct_rows, cpu._separable_rows, cpu.gather_region, cpu.store_tile) + _compile_points()
    return [str(signature) for kernel in kernels for signature in kernel.signatures]


def _compile_points():
    """The band driver's per-element transforms (``engine/points.py``) for the dtypes they meet."""
    import numpy as np

    from imgconv.colour import srgb_encoder
    from imgconv.engine import points

    work = np.zeros((2, 6), np.float32)
    spec = np.array([0, 255, 1], np.float32)
    for dtype in (np.uint8, np.uint16):
        rows = np.zeros((2, 6), dtype)
        table = np.zeros(np.iinfo(dtype).max + 1, np.float32)
        points.decode_rows(rows, table, table, 3, False, work)
        points.blend_rows(work, rows, table, table, np.float32(0.5), 3, False, np.float32(1), spec, rows)
        points.blend_rows(work, rows, table, table, np.float32(0.5), 3, False, np.float32(1), spec, work)
    points.blend_float_rows(work, work, np.float32(0.5), 3, False, np.float32(1), spec, work)
    encoder = srgb_encoder()
    points.encode_rows(
        work, work.view(np.int32), encoder.levels, encoder.limits, encoder.SHIFT, encoder.offset, encoder.count,
        3, np.float32(0), np.zeros((2, 6), np.uint8),
    )
    opacity = np.zeros((2, 2), np.float32)
    for dtype in (np.uint8, np.uint16, np.float32):
        block = np.zeros((2, 8), dtype)
        points.premultiply_rows(block, np.float32(1), 4, work, opacity)
        points.unpremultiply_rows(work, opacity, np.empty((0, 0), np.float32), np.float32(0), np.float32(0), False, np.float32(1), spec, block)
    return (points.decode_rows, points.blend_rows, points.blend_float_rows, points.encode_rows, points.premultiply_rows, points.unpremultiply_rows)


def _write_marker(marker: Path, record: dict) -> None:
    temporary = marker.with_name(f".{marker.name}.{os.getpid()}")
    temporary.write_text(json.dumps(record, indent=1))
    os.replace(temporary, marker)


def _lowest_priority() -> None:
    """Nice 19, for this process and, where Linux groups the scheduling by session
    (autogroup: a nice value ranks a process only inside its group), for its session."""
    try:
        os.nice(19)
    except OSError:
        pass
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write("19")
    except OSError:
        pass


def main() -> int:
    """The background compile: one at a time per cache folder, at the lowest priority."""
    _lowest_priority()
    marker, lock, _ = _paths()
    with open(lock, "a") as handle:
        if not _lock(handle) or marker.exists():
            return 0  # another process is compiling, or one has compiled
        start = time.perf_counter()
        record = {"key": cache_key(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            record["signatures"] = compile_kernels()
        except Exception as exc:  # noqa: BLE001 - recorded; the kernels then compile where used
            record["failed"] = f"{type(exc).__name__}: {exc}"
            print(f"imgconv: compiling the kernels failed: {record['failed']}", file=sys.stderr)
        record["seconds"] = round(time.perf_counter() - start, 2)
        _write_marker(marker, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
