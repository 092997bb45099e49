"""How to convolve, and nothing else: plan (strategy and backend), run, finish.

``make_plan`` is the one place that chooses; ``run`` is the one call that
executes any plan.  Importing this package does not import numba: the
backends (``cpu``, ``cuda``, ``fft``) are imported when a plan runs.
"""
