"""Where numba's on-disk cache goes when the package folder cannot hold it.

Imported by the compiled-kernel modules before numba itself: numba reads
``NUMBA_CACHE_DIR`` at import, and ``cache=True`` raises at decoration time
when neither the package's ``__pycache__`` nor numba's own user cache folder
is writable (a system-wide install used by an ordinary user, a read-only
container image).
"""

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
