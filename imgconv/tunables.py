"""Every tunable number in one place, each with the measurement or reason that set it.

Sizes and thresholds that trade speed against memory or latency, not choices
that change results (those are in :mod:`imgconv.choices`).  Modules read them
as ``tunables.NAME`` at the moment they use them, so a test or a benchmark can
patch one (``monkeypatch.setattr(tunables, "CUDA_BLOCK", (4, 4))``).
"""

# --- CPU kernels (engine/cpu.py) ---------------------------------------------------------------

# --- FFT (engine/fft.py) -----------------------------------------------------------------------

# --- GPU (engine/cuda.py) ----------------------------------------------------------------------

# --- planning (engine/plan.py) -----------------------------------------------------------------

# --- batch (batch/) ----------------------------------------------------------------------------
