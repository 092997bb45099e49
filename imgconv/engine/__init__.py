"""How to convolve, and nothing else: plan (strategy and backend), run, finish.

``plan.make_plan`` is the one place that chooses; ``run.run`` is the one call
that executes any plan; ``finish`` is the one float -> dtype policy.  Importing
this package does not import numba: the backends (``cpu``, ``cuda``, ``fft``)
are imported when a plan runs.
"""
