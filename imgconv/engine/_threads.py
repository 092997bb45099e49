"""The thread pool numba's parallel kernels run on: TBB where it is installed.

numba tries its threading layers in the order TBB, OpenMP, its own work queue.  With
OpenMP (GNU libgomp) a parallel call returns only once every thread of the team has
reached the loop's end, so a thread slow to wake holds up the whole call, however
little it had to do: on a virtual machine whose other vCPU has gone idle that is
about 5 ms (a 2048 x 2048 float32 3x3 took 6-7 ms on two threads, 3.7 ms on one).
TBB's parallel loop returns when the work is done: the calling thread takes the bands
a late thread has not started (the same case: 3.7 ms at worst, 1.0 ms with both
awake).  The bands and their sums are the same on every layer, so the bits are too.

numba loads TBB by its library name (``libtbb.so.12``), and the ``tbb`` wheel
installs that library into ``<prefix>/lib``, which the loader does not search:
:func:`prefer_tbb` loads it from there first, so that numba's default choice finds
it: the compiled-kernel modules call it before numba starts its threads, and so does
``import imgconv`` where numba is imported already (a caller that may start numba's
threads itself, ``numba.set_num_threads``, before its first computation).  A threading
layer the user named (``NUMBA_THREADING_LAYER`` or ``numba.config.THREADING_LAYER`` set to
``omp`` or ``workqueue``) is left alone.
"""

import os
import sys
from pathlib import Path

_LIBRARY = "libtbb.so.12"
_tried = False
_NOT_TBB = ("omp", "workqueue")  # numba's other choices ("default", "safe", ...) may all take TBB


def _candidates():
    import site

    seen = set()
    for prefix in (sys.prefix, sys.base_prefix, site.getuserbase()):
        path = Path(prefix) / "lib" / _LIBRARY
        if path not in seen:
            seen.add(path)
            yield path


def prefer_tbb() -> None:
    """Make TBB's library loadable by numba, where the ``tbb`` wheel put it (Linux only: the
    wheel's other platforms have their own loaders); before numba starts its threads."""
    global _tried
    if _tried:
        return
    _tried = True
    if not sys.platform.startswith("linux"):
        return
    config = sys.modules.get("numba.core.config")  # (set in code before this)
    chosen = config.THREADING_LAYER if config is not None else os.environ.get("NUMBA_THREADING_LAYER", "default")
    if chosen.lower() in _NOT_TBB:
        return
    import ctypes

    for path in _candidates():
        if path.is_file():
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:  # another architecture's, or a broken install: numba falls back to OpenMP
                continue
            return
