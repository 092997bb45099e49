"""The one float -> output-dtype policy: offset, absolute value, round, clip, saturate.

Every route ends here: the compiled CPU kernels apply :meth:`Finish.spec` to each
row as they store it; every other route (FFT tiles, sums of separable pairs, the
GPU, alpha and chain arithmetic) calls :func:`finish_array` or :func:`to_dtype`
on its float32 result.  The rules, whichever route runs:

- add ``offset``, then take the absolute value when ``absolute``;
- for an integer dtype, round half to even (``rint``) and clip to the dtype's
  range: values beyond it saturate, never wrap (also for int32/uint32/int64,
  whose limits float32 cannot hold exactly);
- floating-point outputs are neither rounded nor clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def float32_range(dtype) -> tuple[np.float32, np.float32]:
    """The integer ``dtype``'s range as float32 values that lie inside it.

    float32(2**31 - 1) rounds up to 2**31, which would wrap when cast back, so
    such a limit is moved one float32 step towards zero.

    >>> float32_range(np.uint8)
    (np.float32(0.0), np.float32(255.0))
    >>> int(float32_range(np.int32)[1])
    2147483520
    """
    info = np.iinfo(dtype)
    low, high = np.float32(info.min), np.float32(info.max)
    if int(high) > info.max:
        high = np.nextafter(high, np.float32(0))
    if int(low) < info.min:
        low = np.nextafter(low, np.float32(0))
    return low, high


@dataclass(frozen=True)
class Finish:
    """What happens to each float32 result before it is stored.

    ``offset`` is added, the absolute value is taken when ``absolute``, and for
    an integer ``dtype`` the value is rounded and clipped to its range.
    """

    dtype: np.dtype = np.dtype(np.float32)
    offset: float = 0.0
    absolute: bool = False

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def plain(self) -> bool:
        """float32 out with nothing to do: a kernel may sum straight into the output."""
        return self.dtype == np.float32 and self.offset == 0 and not self.absolute

    def spec(self) -> np.ndarray:
        """The finish as the compiled kernels take it: float32
        ``(offset, absolute, rounding, low, high, plain)``."""
        if self.dtype.kind in "iu":
            low, high = float32_range(self.dtype)
            return np.array([self.offset, self.absolute, 1, low, high, 0], np.float32)
        return np.array([self.offset, self.absolute, 0, -np.inf, np.inf, self.plain], np.float32)


#: Plain float32 results, as :func:`imgconv.convolve` returns them.
FLOAT32 = Finish()


def shift(values: np.ndarray, offset: float, absolute: bool) -> np.ndarray:
    """``values + offset``, then its absolute value when ``absolute`` (float32, in place)."""
    if offset:
        values += np.float32(offset)
    if absolute:
        np.abs(values, out=values)
    return values


def clip_to_range(values: np.ndarray, dtype) -> np.ndarray:
    """Clip float32 ``values`` (in place) to an integer ``dtype``'s range; floats are left alone."""
    if np.dtype(dtype).kind in "iu":
        np.clip(values, *float32_range(dtype), out=values)
    return values


def to_dtype(values: np.ndarray, dtype) -> np.ndarray:
    """Round and clip float ``values`` (float32 ones are changed in place) into ``dtype``.

    >>> to_dtype(np.array([-3.0, 2.5, 3.5, 1e12], np.float32), np.int32)
    array([        -3,          2,          4, 2147483520], dtype=int32)
    """
    dtype = np.dtype(dtype)
    if values.dtype != np.float32:
        values = values.astype(np.float32)
    if dtype.kind in "iu":
        np.rint(values, out=values)
        clip_to_range(values, dtype)
    return values.astype(dtype, copy=False)


def finish_array(values: np.ndarray, finish: Finish) -> np.ndarray:
    """Apply ``finish`` to a float32 array (changed in place) and return the stored result."""
    return to_dtype(shift(values, finish.offset, finish.absolute), finish.dtype)
