"""Which kernels the CPU's direct pass sums with every tap held in registers.

Read by the kernels (``engine/cpu.py``, which generates a loop for each of these counts)
and by the planner's cost model (``engine/plan.py``, which does not import numba): those
kernels cost less a tap than the rest, summed one sweep per group of four taps.
"""

# Tap counts summed in one sweep, every tap in registers: dense 3x3 kernels, the 1-D
# passes of Gaussians of sigma 1, 1.5 and 2 (docs/performance.md, "CPU kernels").  (25
# taps in one row gained nothing over the group sweeps; dense 5x5 rows go three at a time.)
FUSED_TAPS = (9, 13, 17)
# Counts of consecutive rows summed several output rows a sweep, each row loaded once for
# all (the separable column pass, one-column kernels).
PAIRED_TAPS = (9, 13, 17, 25)
# Dense square kernels (their side) summed several output rows a sweep.
DENSE_PAIRS = (3, 5)


def in_registers(shape, taps) -> bool:
    """Whether the direct pass sums a kernel of ``shape`` with ``taps`` non-zero taps in
    sweeps that hold every tap in registers: a count in ``FUSED_TAPS``, a dense square
    kernel of a side in ``DENSE_PAIRS``, or a dense one-column kernel of a count in
    ``PAIRED_TAPS`` (as ``cpu._pairing`` and ``cpu._weighted_sum`` choose)."""
    kh, kw = shape
    dense = taps == kh * kw and kh >= 2
    if dense and ((kh == kw and kh in DENSE_PAIRS) or (kw == 1 and kh in PAIRED_TAPS)):
        return True
    return taps in FUSED_TAPS
