"""Where numba's on-disk cache goes when the package folder cannot hold it.

Imported by the compiled-kernel modules before numba itself: numba reads
``NUMBA_CACHE_DIR`` at import, and ``cache=True`` raises at decoration time
when neither the package's ``__pycache__`` nor numba's own user cache folder
is writable (a system-wide install used by an ordinary user, a read-only
container image).  ``guard_numba_cache`` makes that cache safe for several
processes saving into it at once.
"""

import itertools
import os
import sys
import tempfile
from pathlib import Path


def _writable_dir(path):
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def user_cache_dir():
    """A per-user folder for compiled kernels: ``$XDG_CACHE_HOME/imgconv/numba``, else a temp folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidate = Path(base) / "imgconv" / "numba"
    if _writable_dir(candidate):
        return str(candidate)
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    fallback = Path(tempfile.gettempdir()) / f"imgconv-numba-{uid}"
    _writable_dir(fallback)
    return str(fallback)


def configure_numba_cache() -> str:
    """Point numba's cache at a writable per-user folder unless the user chose one
    or the package's own ``__pycache__`` is writable (numba's default).

    Returns the folder the engine's compiled kernels are cached in (numba's
    default puts them in ``imgconv/engine/__pycache__``, beside their source).
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    package_cache = Path(__file__).parent / "__pycache__"
    if _writable_dir(package_cache):
        return str(package_cache)
    os.environ["NUMBA_CACHE_DIR"] = user_cache_dir()
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba was imported before us: tell its live config too
        config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    return os.environ["NUMBA_CACHE_DIR"]


# --- several processes writing one cache --------------------------------------------------------
#
# numba's cache keeps, per function, an index (signature -> data file number) and one data
# file per compiled signature.  Saving a new signature reads the index, takes the first free
# number, writes the index and then the data, with no lock: two processes compiling two
# signatures of one function at once (batch workers, the background compile beside a
# command) can both take the same number, and the index is then left naming one signature's
# file for the other's.  A later process loads the wrong machine code for it: a TypingError
# where a kernel calls it ("known signatures: ..." without the one asked for), or a kernel
# run on arguments of another type.  The guard below serialises the saves of one cache
# folder, writes the data before the index names it, and refuses a loaded entry whose
# signature is not the one asked for (numba then compiles it afresh and rewrites the entry,
# which heals a cache damaged before).

_GUARDED = "_imgconv_guarded"
_SAVE_LOCK = "imgconv-cache-save.lock"


class _SaveLock:
    """An exclusive ``flock`` on the cache folder's save lock, where there is one."""

    def __init__(self, folder):
        self.path = os.path.join(folder, _SAVE_LOCK)
        self.handle = None

    def __enter__(self):
        try:
            import fcntl

            self.handle = open(self.path, "a")
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock here, or no lock file: save as numba does
            self.__exit__()
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()  # lets go of the lock
            self.handle = None


def _locked_save(self, key, data):
    with _SaveLock(self._cache_path):
        overloads = self._load_index()  # read under the lock: every earlier save is in it
        name = overloads.get(key)
        if name is None:
            taken = set(overloads.values())
            name = next(n for n in map(self._data_name, itertools.count(1)) if n not in taken)
            self._save_data(name, data)  # before the index names it: no reader finds the name without its data
            overloads[key] = name
            self._save_index(overloads)
        else:
            self._save_data(name, data)


def _signature_checked(load):
    def load_overload(self, sig, target_context):
        result = load(self, sig, target_context)
        signature = getattr(result, "signature", None)
        if result is None or signature is None:
            return result
        from numba.core.sigutils import normalize_signature

        args = normalize_signature(sig)[0] if not isinstance(sig, tuple) else sig
        return result if tuple(signature.args) == tuple(args) else None

    return load_overload


def guard_numba_cache(module=None, check_loads=True) -> None:
    """Make the on-disk cache of ``module`` (``numba.core.caching`` unless given: numba-cuda
    has its own copy) safe for several processes at once; once per module, after numba is
    imported.  ``check_loads``: also refuse an entry compiled for another signature (the
    CPU's compile results say theirs).  A numba whose cache is built otherwise is left as
    it is."""
    if module is None:
        from numba.core import caching as module
    files, cache = getattr(module, "IndexDataCacheFile", None), getattr(module, "Cache", None)
    if files is None or getattr(files, _GUARDED, False):
        return
    if all(hasattr(files, name) for name in ("_load_index", "_save_index", "_save_data", "_data_name", "save")):
        files.save = _locked_save
    if check_loads and cache is not None and hasattr(cache, "load_overload"):
        cache.load_overload = _signature_checked(cache.load_overload)
    setattr(files, _GUARDED, True)
