"""The kernel catalog: named filters loaded from YAML, validated once, and
resolved to :class:`Filter` objects that the convolution layer applies.

A catalog is built from the shipped ``kernels.yaml`` (its header documents the
schema), then the files named in ``IMGCONV_CATALOG``, then any files given to
:func:`load_catalog`; a later entry replaces an earlier one of the same name.

Entries come in three kinds:

- ``matrix``: a fixed kernel, applied exactly as written (optionally normalised
  and scaled);
- ``family``: a parametric kernel (gaussian, box, unsharp, log, motion: see
  :mod:`imgconv.kernels.families`), whose parameters are given at resolve time;
- ``combined``: several kernels (other entries or inline matrices) whose
  results are combined, e.g. the magnitude of two gradients.

Conventions: convolution is true convolution (the kernel is flipped, as
``scipy.ndimage.convolve`` computes it).  The gradient kernels are written so
that ``*-x`` is positive where intensity increases to the right (increasing
column index) and ``*-y`` where it increases downward (increasing row index).
Laplacian-type kernels (``laplacian``, ``log``) compute the mathematical
Laplacian: negative on a bright spot, as ``scipy.ndimage.laplace`` and
``scipy.ndimage.gaussian_laplace`` do.

This module imports only numpy, yaml and the standard library: ``imgconv list``
and ``imgconv show`` must start without numba.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import yaml

from imgconv.choices import COMBINE_MODES, MAX_CATALOG_BYTES, MAX_KERNEL_SIDE, OUT_RANGES, check_kernel_side
from imgconv.errors import CatalogError
from imgconv.kernels.algebra import scaled, sums_to_zero
from imgconv.kernels.families import FAMILIES
from imgconv.kernels.files import read_regular_file
from imgconv.kernels.types import PARAM_KINDS, Entry, Filter, Kernel, Param, _convert, _fmt_number, _FrozenMap

__all__ = [
    "Catalog",
    "load_catalog",
    "builtin_catalog_path",
    "parse_assignments",
    # re-exported: what a catalog file may name
    "FAMILIES",
    "COMBINE_MODES",
    "OUT_RANGES",
    "MAX_KERNEL_SIDE",
    "ENV_VAR",
]

ENV_VAR = "IMGCONV_CATALOG"
BUILTIN_SOURCE = "built-in"

_TOP_KEYS = ("kernels", "version")
_SUPPORTED_VERSIONS = (1,)
_COMMON_KEYS = ("description", "aliases", "scale", "bias", "out_range")
_KIND_KEYS = {
    "matrix": ("matrix", "normalize"),
    "family": ("family", "params"),
    "combined": ("kernels", "combine"),
}
_ENTRY_KEYS = _COMMON_KEYS + tuple(k for keys in _KIND_KEYS.values() for k in keys)
_PARAM_DECL_KEYS = ("default", "min", "max", "type", "choices", "description")
_ITEM_KEYS = ("matrix", "entry", "normalize", "scale", "params")

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_RESOLVE_CACHE_SIZE = 256


# ---------------------------------------------------------------------------
# Loading and validation


class _DuplicateKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """yaml's safe loader (plain data only) that also refuses duplicate keys,
    which plain ``safe_load`` silently collapses to the last one."""


def _construct_mapping_once(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_DuplicateKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_once)


def _yaml_error_line(exc):
    """A one-line account of a YAML error, with its position."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "could not determine a constructor" in problem:
        quoted = re.findall(r"'([^']*)'", problem)
        tag = quoted[-1] if quoted else problem
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        problem = f"YAML tag '{tag}' is not allowed (a catalog holds plain data only)"
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"invalid YAML: {problem}{where}"


class _Spec:
    """How to build an entry's kernels (the part of an entry not in Entry)."""

    __slots__ = ("kind", "kernel", "family", "items", "combine", "scale", "bias", "out_range", "source", "built")

    def __init__(self, kind, *, source, kernel=None, family=None, items=(), combine="single", scale=1.0, bias=0.0, out_range="clip"):
        self.kind = kind
        self.source = source
        self.kernel = kernel  # matrix entries: the final Kernel
        self.family = family  # family entries: the _Family
        self.items = items  # combined entries: tuple of _Item
        self.combine = combine
        self.scale = scale
        self.bias = bias
        self.out_range = out_range
        # family entries: kernels already built, by parameter values.  Specs are
        # shared by every catalog loaded from the same unchanged file.
        self.built = {}


@dataclass(frozen=True)
class _Item:
    """One kernel of a combined entry: an inline kernel or a reference."""

    number: int  # 1-based position in the list, for messages
    kernel: Kernel | None = None
    ref: str | None = None
    params: Mapping = field(default_factory=dict)
    scale: float = 1.0


class _Where:
    """The prefix of messages about one place in one file."""

    def __init__(self, source, entry=None):
        self.source = source
        self.entry = entry

    def error(self, message):
        prefix = f"{self.source}: "
        if self.entry is not None:
            prefix += f"entry '{self.entry}': "
        return CatalogError(prefix + message)


def _quote_list(names):
    return ", ".join(f"'{n}'" for n in names)


def _check_keys(mapping, allowed, where, what):
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise where.error(f"unknown {what} key {_shown(key)}{hint}; allowed: {', '.join(allowed)}")


def _finite(value) -> bool:
    """Whether a YAML number is finite as a float (a 400-digit integer is not: it overflows)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _shown(value) -> str:
    """A value for a message, abbreviated (a YAML scalar may be thousands of characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + "..." + text[-12:]


def _number(value, where, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise where.error(f"{what} must be a number, got {_shown(value)}")
    if not _finite(value):
        raise where.error(f"{what} must be a finite number, got {_shown(value)}")
    return float(value)


def _one_line(value, where, what):
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"{what} must be a non-empty string, got {value!r}")
    value = value.strip()
    if "\n" in value or "\r" in value:
        raise where.error(f"{what} must be one line")
    return value


def _check_size(shape, where, what="kernel"):
    try:
        check_kernel_side(shape, what)
    except ValueError as exc:
        raise where.error(str(exc)) from exc


def _parse_matrix(value, where, what="matrix"):
    if not isinstance(value, list) or not value:
        raise where.error(f"{what} must be a non-empty list of rows, e.g. [[0, 1], [1, 0]], got {value!r}")
    if not all(isinstance(row, list) for row in value):
        raise where.error(f"{what} must be a list of rows (lists of numbers); write a single row as [[1, 2, 1]]")
    width = len(value[0])
    _check_size((len(value), max(len(row) for row in value)), where, what)
    for r, row in enumerate(value, 1):
        if not row:
            raise where.error(f"{what} row {r} is empty")
        if len(row) != width:
            raise where.error(f"{what} row {r} has {len(row)} values, row 1 has {width}")
        for c, item in enumerate(row, 1):
            if isinstance(item, bool) or not isinstance(item, numbers.Real):
                hint = ""
                if isinstance(item, str) and re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", item.strip()):
                    hint = " (YAML reads 1e-3 as a string: write 1.0e-3)"
                raise where.error(f"{what} row {r}, column {c} must be a number, got {item!r}{hint}")
            if not _finite(item):
                raise where.error(f"{what} row {r}, column {c} must be finite, got {_shown(item)}")
    return np.array(value, dtype=np.float64)


def _finish_matrix(matrix, normalize, scale, where, what="matrix"):
    if normalize:
        if sums_to_zero(matrix):
            raise where.error(f"normalize: true, but the {what} sums to 0")
        matrix = matrix / float(matrix.sum())
    if scale != 1.0:
        matrix = matrix * scale
    return Kernel(matrix)


def _bool(value, where, what):
    if not isinstance(value, bool):
        raise where.error(f"{what} must be true or false, got {value!r}")
    return value


def _check_name(name, where, what):
    if not isinstance(name, str):
        raise where.error(f"{what} must be a string, got {name!r} (quote it in YAML)")
    if not _NAME_PATTERN.match(name):
        raise where.error(f"{what} {name!r} must be letters, digits, '-', '_' or '.', starting with a letter or digit")
    return name


def _merge_param(base: Param, decl, where):
    """A family's declared parameter with the overrides an entry declares."""
    pwhere = _Where(where.source, where.entry)
    prefix = f"parameter '{base.name}': "

    def error(message):
        return pwhere.error(prefix + message)

    if not isinstance(decl, dict):
        decl = {"default": decl}  # shorthand: `sigma: 2.0` sets the default
    for key in decl:
        if key not in _PARAM_DECL_KEYS:
            raise error(f"unknown key {key!r}; allowed: {', '.join(_PARAM_DECL_KEYS)}")
    kind = decl.get("type", base.kind)
    if kind not in PARAM_KINDS:
        raise error(f"type must be one of {', '.join(PARAM_KINDS)}, got {kind!r}")
    if kind != base.kind:
        raise error(f"type {kind!r} does not match the family's {base.kind!r}")
    minimum, maximum, choices = base.minimum, base.maximum, base.choices
    if kind in ("float", "int"):
        for key in ("min", "max"):
            if key in decl:
                value = _convert(kind, decl[key], strings=False)
                if value is None:
                    noun = "an integer" if kind == "int" else "a finite number"
                    raise error(f"{key} must be {noun}, got {decl[key]!r}")
                if base.minimum is not None and value < base.minimum or base.maximum is not None and value > base.maximum:
                    raise error(f"{key} {_fmt_number(value)} is outside the family's limits ({base.allowed})")
                if key == "min":
                    minimum = value
                else:
                    maximum = value
        if minimum is not None and maximum is not None and minimum > maximum:
            raise error(f"min {_fmt_number(minimum)} is greater than max {_fmt_number(maximum)}")
    else:
        for key in ("min", "max"):
            if key in decl:
                raise error(f"{key} applies to float and int parameters, not {kind}")
    if "choices" in decl:
        if kind != "choice":
            raise error(f"choices apply to choice parameters, not {kind}")
        new = decl["choices"]
        if not isinstance(new, list) or not new or not all(isinstance(c, str) for c in new):
            raise error(f"choices must be a non-empty list of strings, got {new!r}")
        if len(set(new)) != len(new):
            raise error("choices must not repeat")
        extra = [c for c in new if c not in (base.choices or ())]
        if extra:
            raise error(f"choices {_quote_list(extra)} are not offered by the family (it offers {', '.join(base.choices or ())})")
        choices = tuple(new)
    description = base.description
    if "description" in decl:
        description = _one_line(decl["description"], pwhere, prefix + "description")
    merged = Param(base.name, kind, base.default, minimum, maximum, choices, description)
    if "default" in decl:
        default = _convert(kind, decl["default"], strings=False)
        if default is None or not merged._within(default):
            raise error(f"default must be {merged.allowed}, got {decl['default']!r}")
    else:
        default = base.default
        if not merged._within(default):
            raise error(f"the family's default {_fmt_number(default)} is not {merged.allowed}: give a default")
    return replace(merged, default=default)


def _parse_item(value, number, where):
    what = f"kernels item {number}"
    if isinstance(value, str):
        return _Item(number, ref=_check_name(value, where, what))
    if not isinstance(value, dict):
        raise where.error(f"{what} must be an entry name or a mapping with 'matrix' or 'entry', got {value!r}")
    for key in value:
        if key not in _ITEM_KEYS:
            raise where.error(f"{what}: unknown key {key!r}; allowed: {', '.join(_ITEM_KEYS)}")
    if ("matrix" in value) == ("entry" in value):
        raise where.error(f"{what} needs exactly one of 'matrix' or 'entry'")
    scale = _number(value["scale"], where, f"{what}: scale") if "scale" in value else 1.0
    if "matrix" in value:
        if "params" in value:
            raise where.error(f"{what}: 'params' goes with 'entry', not 'matrix'")
        normalize = _bool(value.get("normalize", False), where, f"{what}: normalize")
        matrix = _parse_matrix(value["matrix"], where, f"{what} matrix")
        return _Item(number, kernel=_finish_matrix(matrix, normalize, scale, where, f"{what} matrix"))
    if "normalize" in value:
        raise where.error(f"{what}: 'normalize' goes with 'matrix', not 'entry'")
    params = value.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise where.error(f"{what}: params must be a mapping of parameter names to values, got {params!r}")
    return _Item(number, ref=_check_name(value["entry"], where, f"{what} entry"), params=_FrozenMap(params), scale=scale)


def _parse_entry(name, body, source):
    where = _Where(source, name)
    if not isinstance(body, dict):
        raise where.error(f"must be a mapping with at least 'description', got {body!r}")
    _check_keys(body, _ENTRY_KEYS, where, "entry")
    if "description" not in body:
        raise where.error("missing 'description' (one line saying what the kernel does)")
    description = _one_line(body["description"], where, "description")
    kinds = [kind for kind, keys in _KIND_KEYS.items() if keys[0] in body]
    if len(kinds) != 1:
        found = " and ".join(f"'{_KIND_KEYS[k][0]}'" for k in kinds) or "none"
        raise where.error(f"needs exactly one of 'matrix', 'family' or 'kernels' (found {found})")
    kind = kinds[0]
    for key in body:
        for other, keys in _KIND_KEYS.items():
            if other != kind and key in keys:
                raise where.error(f"'{key}' goes with '{keys[0]}', not '{_KIND_KEYS[kind][0]}'")
    aliases = body.get("aliases", [])
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, list):
        raise where.error(f"aliases must be a list of names, got {aliases!r}")
    aliases = tuple(_check_name(a, where, "alias") for a in aliases)
    if len(set(aliases)) != len(aliases):
        raise where.error("aliases must not repeat")
    if name in aliases:
        raise where.error(f"alias '{name}' is the entry's own name")
    scale = _number(body["scale"], where, "scale") if "scale" in body else 1.0
    bias = _number(body["bias"], where, "bias") if "bias" in body else 0.0
    out_range = body.get("out_range", "clip")
    if out_range not in OUT_RANGES:
        raise where.error(f"out_range must be one of {', '.join(OUT_RANGES)}, got {out_range!r}")
    common = dict(source=source, scale=scale, bias=bias, out_range=out_range)
    params = {}
    family_name = None
    if kind == "matrix":
        normalize = _bool(body.get("normalize", False), where, "normalize")
        kernel = _finish_matrix(_parse_matrix(body["matrix"], where), normalize, scale, where)
        spec = _Spec(kind, kernel=kernel, **common)
    elif kind == "family":
        family_name = body["family"]
        if not isinstance(family_name, str) or family_name not in FAMILIES:
            raise where.error(f"unknown family {family_name!r}; families: {', '.join(sorted(FAMILIES))}")
        family = FAMILIES[family_name]
        declared = {p.name: p for p in family.params}
        decls = body.get("params", {})
        if decls is None:
            decls = {}
        if not isinstance(decls, dict):
            raise where.error(f"params must be a mapping of parameter names to declarations, got {decls!r}")
        for pname in decls:
            if pname not in declared:
                raise where.error(
                    f"family '{family_name}' has no parameter {pname!r} (it has: {', '.join(declared)})"
                )
        params = {p: _merge_param(base, decls[p], where) if p in decls else base for p, base in declared.items()}
        spec = _Spec(kind, family=family, **common)
    else:
        items = body["kernels"]
        if not isinstance(items, list) or not items:
            raise where.error(f"kernels must be a non-empty list of entry names or {{matrix: ...}}, got {items!r}")
        parsed = tuple(_parse_item(item, n, where) for n, item in enumerate(items, 1))
        combine = body.get("combine", "single" if len(parsed) == 1 else None)
        if combine is None:
            raise where.error(f"several kernels need 'combine' (one of {', '.join(c for c in COMBINE_MODES if c != 'single')})")
        if combine not in COMBINE_MODES:
            raise where.error(f"unknown combine {combine!r}; allowed: {', '.join(COMBINE_MODES)}")
        if combine == "single" and len(parsed) != 1:
            raise where.error(f"combine 'single' takes one kernel, got {len(parsed)}")
        spec = _Spec(kind, items=parsed, combine=combine, **common)
    entry = Entry(name, description, params, aliases, source, kind, family_name)
    return entry, spec


def _read_file(path, origin):
    label = str(path)
    if origin:
        label += f" (from {origin})"
    data = read_regular_file(os.fspath(path), MAX_CATALOG_BYTES, "catalog", CatalogError, label)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{label}: catalog is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        document = yaml.load(text, Loader=_DuplicateKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CatalogError(f"{label}: {_yaml_error_line(exc)}") from exc
    except RecursionError as exc:  # thousands of nested brackets
        raise CatalogError(f"{label}: the YAML nests too deeply to be a catalog") from exc
    return document


def _parse_document(document, source):
    where = _Where(source)
    if document is None:
        raise where.error("the catalog is empty; expected a mapping with a 'kernels' key")
    if not isinstance(document, dict):
        raise where.error(f"expected a mapping with a 'kernels' key at the top, got {type(document).__name__}")
    for key in document:
        if key not in _TOP_KEYS:
            raise where.error(f"unknown top-level key {key!r}; allowed: {', '.join(_TOP_KEYS)}")
    version = document.get("version", _SUPPORTED_VERSIONS[-1])
    if isinstance(version, bool) or version not in _SUPPORTED_VERSIONS:
        raise where.error(f"unsupported version {document['version']!r}; supported: {', '.join(map(str, _SUPPORTED_VERSIONS))}")
    if "kernels" not in document:
        raise where.error("missing the top-level 'kernels' mapping")
    kernels = document["kernels"]
    if kernels is None:
        kernels = {}
    if not isinstance(kernels, dict):
        raise where.error(f"'kernels' must be a mapping of entry names to entries, got {type(kernels).__name__}")
    parsed = []
    names = set()
    alias_owner = {}
    for name, body in kernels.items():
        _check_name(name, where, "entry name")
        entry, spec = _parse_entry(name, body, source)
        names.add(name)
        for alias in entry.aliases:
            if alias in alias_owner:
                raise _Where(source, name).error(f"alias '{alias}' is also an alias of '{alias_owner[alias]}'")
            alias_owner[alias] = name
        parsed.append((entry, spec))
    for alias, owner in alias_owner.items():
        if alias in names:
            raise _Where(source, owner).error(f"alias '{alias}' is the name of another entry in this file")
    return parsed


_PARSE_CACHE = {}  # (path, mtime_ns, size) -> parsed entries: a file read once per process


def _load_file(path, origin=None):
    path = os.fspath(path)
    try:
        stat = os.stat(path)
        key = (os.path.abspath(path), path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None
    if key is not None and key in _PARSE_CACHE:
        return _PARSE_CACHE[key]
    source = path
    parsed = _parse_document(_read_file(path, origin), source)
    if key is not None:
        _PARSE_CACHE[key] = parsed
    return parsed


# ---------------------------------------------------------------------------
# The catalog


class Catalog:
    """Named filters: list them, look them up (aliases too), resolve them with
    parameters to :class:`Filter` objects.  Build one with :func:`load_catalog`."""

    def __init__(self, entries=(), specs=None, aliases=None):
        self._entries = {e.name: e for e in entries}
        self._specs = dict(specs or {})
        self._aliases = dict(aliases or {})
        self._cache = {}

    # -- listing ------------------------------------------------------------
    def names(self) -> list[str]:
        """Canonical names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Every entry, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name):
        return name in self._entries or name in self._aliases

    def __len__(self):
        return len(self._entries)

    def __iter__(self):
        return iter(self.names())

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (itself or the entry it is an alias of)."""
        return self.entry(name).name

    def entry(self, name: str) -> Entry:
        """The entry called ``name`` (or with alias ``name``)."""
        if isinstance(name, str):
            if name in self._entries:
                return self._entries[name]
            if name in self._aliases:
                return self._entries[self._aliases[name]]
        candidates = list(self._entries) + list(self._aliases)
        close = difflib.get_close_matches(str(name), candidates, n=1) if isinstance(name, str) else []
        suggestion = f" — did you mean '{close[0]}'?" if close else ""
        raise CatalogError(f"unknown kernel {name!r}{suggestion}")

    # -- resolving ------------------------------------------------------------
    def coerce_params(self, name: str, params: Mapping[str, object] | None = None) -> dict[str, object]:
        """``params`` for entry ``name`` checked and converted, defaults filled in."""
        entry = self.entry(name)
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise CatalogError(f"kernel '{entry.name}': parameters must be a mapping, got {type(params).__name__}")
        values = {}
        for key, value in params.items():
            if key not in entry.params:
                raise CatalogError(self._unknown_param(entry, key))
            try:
                values[key] = entry.params[key].coerce(value)
            except CatalogError as exc:
                raise CatalogError(f"kernel '{entry.name}': {exc}") from exc
        for pname, param in entry.params.items():
            values.setdefault(pname, param.default)
        return values

    @staticmethod
    def _unknown_param(entry, key):
        prefix = f"kernel '{entry.name}': unknown parameter {key!r}"
        if not entry.params:
            return f"{prefix}; it takes no parameters"
        close = difflib.get_close_matches(str(key), list(entry.params), n=1)
        if close:
            return f"{prefix} — did you mean '{close[0]}'?"
        return f"{prefix}; its parameters: {', '.join(entry.params)}"

    def resolve(self, name: str, params: Mapping[str, object] | None = None) -> Filter:
        """The filter ``name`` with ``params`` (command-line strings or Python
        values; missing ones take their defaults)."""
        entry = self.entry(name)
        values = self.coerce_params(entry.name, params)
        key = (entry.name, tuple(sorted(values.items())))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        spec = self._specs[entry.name]
        kernels = self._kernels(entry, spec, values)
        for kernel in kernels:
            _check_size(kernel.shape, _Where(f"kernel '{entry.name}'"), "the resolved kernel")
        flt = Filter(
            name=entry.name,
            description=entry.description,
            params=values,
            kernels=kernels,
            combine=spec.combine,
            bias=spec.bias,
            out_range=spec.out_range,
        )
        if len(self._cache) >= _RESOLVE_CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = flt
        return flt

    def _kernels(self, entry, spec, values):
        if spec.kind == "matrix":
            return (spec.kernel,)
        if spec.kind == "family":
            key = tuple(sorted(values.items()))
            kernel = spec.built.get(key)
            if kernel is None:
                kernel = scaled(spec.family.build(**values), spec.scale)
                if len(spec.built) >= _RESOLVE_CACHE_SIZE:
                    spec.built.clear()
                spec.built[key] = kernel
            return (kernel,)
        kernels = []
        for item in spec.items:
            if item.kernel is not None:
                kernel = item.kernel
            else:
                try:
                    (kernel,) = self.resolve(item.ref, item.params).kernels
                except CatalogError as exc:
                    raise CatalogError(f"{spec.source}: entry '{entry.name}': kernels item {item.number}: {exc}") from exc
                kernel = scaled(kernel, item.scale)
            kernels.append(scaled(kernel, spec.scale))
        return tuple(kernels)

    # -- checks after merging ------------------------------------------------
    def _check_references(self):
        """Every reference names a single-kernel entry, takes its parameters, and
        no entry refers to itself through others."""
        for name, spec in self._specs.items():
            if spec.kind != "combined":
                continue
            where = _Where(spec.source, name)
            for item in spec.items:
                if item.ref is None:
                    continue
                what = f"kernels item {item.number}"
                if item.ref not in self:
                    close = difflib.get_close_matches(item.ref, list(self._entries) + list(self._aliases), n=1)
                    suggestion = f" — did you mean '{close[0]}'?" if close else ""
                    raise where.error(f"{what} refers to unknown entry '{item.ref}'{suggestion}")
                target = self.entry(item.ref)
                target_spec = self._specs[target.name]
                if target_spec.kind == "combined" and target_spec.combine != "single":
                    raise where.error(
                        f"{what} refers to '{item.ref}' (from {target.source}), which combines several kernels; "
                        "only single-kernel entries can be referenced"
                    )
                try:
                    self.coerce_params(target.name, item.params)
                except CatalogError as exc:
                    raise where.error(f"{what}: {exc}") from exc
        state = {}  # name -> 1 while visiting, 2 when done

        def visit(name, path):
            state[name] = 1
            spec = self._specs[name]
            if spec.kind == "combined":
                for item in spec.items:
                    if item.ref is None:
                        continue
                    target = self.entry(item.ref).name
                    if state.get(target) == 1:
                        cycle = path[path.index(target):] + [target]
                        raise _Where(self._specs[cycle[0]].source, cycle[0]).error(
                            "reference cycle: " + " -> ".join(cycle)
                        )
                    if target not in state:
                        visit(target, path + [target])
            state[name] = 2

        for name in sorted(self._specs):
            if name not in state:
                visit(name, [name])


def builtin_catalog_path() -> pathlib.Path:
    """The shipped kernels.yaml.

    An installed wheel holds it inside the package, as ``imgconv/kernels.yaml``
    (beside the ``imgconv/kernels/`` package; pyproject.toml force-includes it);
    a source checkout or an editable install has it at the top of the
    repository, beside the ``imgconv`` folder.

    Returns
    -------
    pathlib.Path
    """
    # A plain path beside the package: importlib.resources costs more to import (~7 ms of
    # every command) than it could add for a package that is always a folder on disk.
    package_dir = pathlib.Path(__file__).resolve().parent.parent  # imgconv/ (this file is imgconv/kernels/catalog.py)
    packaged = package_dir / "kernels.yaml"
    return packaged if packaged.is_file() else package_dir.parent / "kernels.yaml"


def load_catalog(
    paths: Sequence[str | os.PathLike] = (), *, builtin: bool = True, use_env: bool = True
) -> Catalog:
    """Load the built-in catalog, then the files in ``IMGCONV_CATALOG``, then ``paths``.

    A later entry replaces an earlier one of the same name (and its aliases); a
    later alias takes over an earlier alias.

    Parameters
    ----------
    paths : str, path-like or sequence of them
        Catalog files read after the built-in one and the environment's, in order.
    builtin : bool
        Start from the shipped ``kernels.yaml`` (:func:`builtin_catalog_path`).
    use_env : bool
        Read the files named in ``IMGCONV_CATALOG`` (``os.pathsep``-separated).

    Returns
    -------
    Catalog

    Raises
    ------
    CatalogError
        Naming the file and the entry, for any problem.

    Examples
    --------
    >>> catalog = load_catalog()
    >>> catalog.resolve("sharpen").kernels[0].matrix
    array([[ 0., -1.,  0.],
           [-1.,  5., -1.],
           [ 0., -1.,  0.]])
    >>> catalog.resolve("gaussian", {"sigma": "2"}).kernels[0].matrix.shape
    (17, 17)
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sources = []
    if builtin:
        sources.append((builtin_catalog_path(), None, BUILTIN_SOURCE))
    if use_env:
        for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
            if part.strip():
                sources.append((part, ENV_VAR, None))
    sources.extend((p, None, None) for p in paths)

    entries, specs, aliases = {}, {}, {}
    for path, origin, label in sources:
        parsed = _load_file(path, origin)
        for entry, spec in parsed:
            if label is not None:
                entry = replace(entry, source=label)  # messages still name the file (spec.source)
            name = entry.name
            old = entries.get(name)
            if old is not None:
                for alias in old.aliases:
                    if aliases.get(alias) == name:
                        del aliases[alias]
            aliases.pop(name, None)  # a name takes precedence over an earlier alias
            for alias in entry.aliases:
                if alias in entries and alias != name:
                    raise _Where(spec.source, name).error(
                        f"alias '{alias}' is already the name of an entry (from {entries[alias].source})"
                    )
            entries[name] = entry
            specs[name] = spec
            for alias in entry.aliases:
                aliases[alias] = name
    # An entry lists only the aliases that still lead to it.
    final = [replace(e, aliases=tuple(a for a in e.aliases if aliases.get(a) == e.name)) for e in entries.values()]
    catalog = Catalog(final, specs, aliases)
    catalog._check_references()
    return catalog


# ---------------------------------------------------------------------------
# Command-line helpers


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """``["sigma=2", "radius=5"]`` -> ``{"sigma": "2", "radius": "5"}``.

    Values stay strings (``Catalog.resolve`` converts them).  A pair without
    "=" or with an empty key, or a key given twice, is a CatalogError."""
    result = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise CatalogError(f"bad parameter '{pair}': expected KEY=VALUE")
        if key in result:
            raise CatalogError(f"parameter '{key}' given twice: '{key}={result[key]}' and '{pair}'")
        result[key] = value.strip()
    return result
