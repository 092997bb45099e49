"""The data types of the kernels layer: :class:`Param`, :class:`Kernel`,
:class:`Filter` and :class:`Entry`, and the value conversions they rely on.

Imports only numpy and the standard library (never numba).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from imgconv.choices import parse_bool
from imgconv.errors import CatalogError

__all__ = ["Param", "Kernel", "Filter", "Entry", "PARAM_KINDS"]

#: The kinds of value a parametric entry's parameter takes.
PARAM_KINDS = ("float", "int", "bool", "choice")


class _FrozenMap(Mapping):
    """A read-only, hashable mapping (parameter values and declarations)."""

    __slots__ = ("_data",)

    def __init__(self, data=()):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __hash__(self):
        return hash(frozenset(self._data.items()))

    def __repr__(self):
        return repr(self._data)


def _fmt_number(value) -> str:
    """2 rather than 2.0, 0.1 rather than 0.1000000001 noise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.12g}"
    return repr(value)


@dataclass(frozen=True)
class Param:
    """A declared parameter of a parametric entry.

    ``kind`` is "float", "int", "bool" or "choice"; ``minimum``/``maximum``
    (inclusive, None for unbounded) apply to numbers, ``choices`` to "choice".
    """

    name: str
    kind: str
    default: object
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    description: str = ""

    @property
    def allowed(self) -> str:
        """What values are accepted, in words: "a number from 0.1 to 127"."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices or ())
        noun = "an integer" if self.kind == "int" else "a number"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"{noun} from {_fmt_number(low)} to {_fmt_number(high)}"
        if low is not None:
            return f"{noun} >= {_fmt_number(low)}"
        if high is not None:
            return f"{noun} <= {_fmt_number(high)}"
        return noun

    def coerce(self, value: object) -> object:
        """``value`` (a Python value or a command-line string) as this
        parameter's type, checked against its limits.

        Raises
        ------
        CatalogError
            Naming the parameter and what it accepts.
        """
        converted = _convert(self.kind, value, strings=True)
        if converted is None or not self._within(converted):
            raise CatalogError(f"parameter '{self.name}' must be {self.allowed}, got {value!r}")
        return converted

    def _within(self, value):
        if self.kind == "choice":
            return value in (self.choices or ())
        if self.kind in ("float", "int"):
            if self.minimum is not None and value < self.minimum:
                return False
            if self.maximum is not None and value > self.maximum:
                return False
        return True


def _convert(kind, value, *, strings):
    """``value`` as ``kind``, or None when it is not one.  ``strings``: accept
    the command line's spellings ("2.5", "true")."""
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if strings and isinstance(value, str):
            return parse_bool(value)
        if strings and isinstance(value, int) and value in (0, 1):
            return bool(value)
        return None
    if kind == "choice":
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if strings and isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if kind == "int":
        if isinstance(value, numbers.Integral):
            return int(value)
        if strings and isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        return None
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    return None


def _readonly(array):
    array = np.array(array, dtype=np.float64)  # always a private copy
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Kernel:
    """One convolution kernel: ``matrix`` (float64, 2-D, read-only) and, when
    the family knows the kernel is separable, ``factors = (column, row)`` with
    ``np.outer(column, row) == matrix``."""

    matrix: np.ndarray
    factors: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self):
        matrix = self.matrix
        if not (isinstance(matrix, np.ndarray) and matrix.dtype == np.float64 and not matrix.flags.writeable):
            matrix = _readonly(matrix)
            object.__setattr__(self, "matrix", matrix)
        if matrix.ndim != 2:
            raise ValueError(f"a kernel matrix must be 2-D, got shape {matrix.shape}")
        if matrix.size == 0:
            raise ValueError(f"a kernel matrix must not be empty, got shape {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("a kernel matrix must hold finite numbers (no NaN or infinity)")
        if self.factors is not None:
            column, row = self.factors
            column, row = _readonly(column).reshape(-1), _readonly(row).reshape(-1)
            if (column.size, row.size) != matrix.shape:
                raise ValueError(f"factors of sizes {column.size} and {row.size} do not match a {matrix.shape} kernel")
            object.__setattr__(self, "factors", (column, row))

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def __eq__(self, other):
        if not isinstance(other, Kernel):
            return NotImplemented
        if not np.array_equal(self.matrix, other.matrix):
            return False
        if (self.factors is None) != (other.factors is None):
            return False
        return self.factors is None or all(np.array_equal(a, b) for a, b in zip(self.factors, other.factors))

    def __hash__(self):
        return hash((self.matrix.shape, self.matrix.tobytes()))


@dataclass(frozen=True)
class Filter:
    """A resolved catalog entry: what ``apply_filter`` runs.

    ``combine``: "single" (one kernel), "magnitude" (square root of the sum
    of the squares of each kernel's result), "sum-abs" (sum of their absolute
    values) or "max" (the largest result, pixel by pixel).  ``bias`` is added after
    combining, as a fraction of the image's full scale.  ``out_range`` is the
    default mapping of signed results to pixels.
    """

    name: str
    description: str
    params: Mapping[str, object]
    kernels: tuple[Kernel, ...]
    combine: str
    bias: float
    out_range: str

    def __post_init__(self):
        if not isinstance(self.params, _FrozenMap):
            object.__setattr__(self, "params", _FrozenMap(self.params))
        if not isinstance(self.kernels, tuple):
            object.__setattr__(self, "kernels", tuple(self.kernels))


@dataclass(frozen=True)
class Entry:
    """A catalog entry as listed: its parameters, aliases and where it came from.

    ``kind`` (an addition to the interface) is "matrix", "family" or
    "combined"; ``family`` names the family of a "family" entry.
    """

    name: str
    description: str
    params: Mapping[str, Param]
    aliases: tuple[str, ...]
    source: str
    kind: str = "matrix"
    family: str | None = None

    def __post_init__(self):
        if not isinstance(self.params, _FrozenMap):
            object.__setattr__(self, "params", _FrozenMap(self.params))
