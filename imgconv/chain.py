"""Chains: several filters applied in order, with one decode and one encode.

Syntax (what ``imgconv apply``, ``batch``, ``show`` and ``gallery`` accept)::

    CHAIN  := STEP ( "," STEP )*
    STEP   := NAME ( ":" KEY "=" VALUE )*         a catalog filter and its parameters
            | "[" MATRIX "]" ( ":" KEY "=" VALUE )*  an inline kernel: "[0 -1 0; -1 5 -1; 0 -1 0]"
            | "@" FILE ( ":" KEY "=" VALUE )*       a kernel file (.mat, .npy, CSV, ImageMagick text)

A ``KEY=VALUE`` item after a comma adds a parameter to the step before it, so
``gaussian:sigma=2,radius=6,sharpen`` is ``gaussian`` with two parameters, then
``sharpen``.  Commas inside ``[...]`` belong to the matrix.  Kernel steps take
``normalize=true`` (divide by the sum) and ``scale=X``.

How a chain runs (:func:`apply_chain`): band by band (``engine/stream.py``: each step
makes the rows the next needs, so no full-size float image is made), in float32 in the
image's own units (``--linear``: decoded from sRGB to linear light, 0..1, as rows enter),
every step with no rounding or clipping in between (so a chain of linear filters is
exactly its equivalent kernel, up to the borders), ``repeat`` runs the whole
chain again, ``strength`` blends the result with the original
(``original + strength * (result - original)``: 0 is the original, 1 the
result, above 1 extrapolates as unsharp masking does), and only then is the
result encoded, rounded and clipped back to the input's dtype (as rows leave).  A
single step with no repeat, strength or linear light is exactly
:func:`imgconv.apply_filter`.  Images of other dtypes than uint8, uint16 and float32,
and plans the band driver does not run (FFT, GPU), take the whole-image route: one
float32 work image in 0..1, step after step.

This module does not import numba; computing does.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from imgconv.choices import MAX_KERNEL_SIDE, MAX_REPEAT, parse_bool
from imgconv.engine.stream import PointLayer  # numpy only: numba is imported where kernels run
from imgconv.errors import CatalogError, shorten
from imgconv.kernels import (
    Filter,
    Kernel,
    compose,
    load_kernel,
    orient_filter,
    parse_assignments,
    parse_inline_kernel,
    read_kernel_file,
)

__all__ = ["Step", "Chain", "parse_chain", "split_chain", "apply_chain", "float_copies", "compose", "MAX_REPEAT"]

_KERNEL_STEP_PARAMS = ("normalize", "scale")
_KEY_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*=")
_TRAILING_PARAMS = re.compile(r"((?::[A-Za-z_][A-Za-z0-9_-]*=[^:]*)+)\Z")


@dataclass(frozen=True)
class Step:
    """One filter of a chain: the resolved filter and the text it came from.

    ``loaded`` is the :class:`imgconv.kernels.LoadedKernel` of an inline or
    file kernel (None for catalog filters)."""

    filter: Filter
    text: str
    loaded: object = None


@dataclass(frozen=True)
class Chain:
    """Filters applied in order (``steps``), ``repeat`` times, blended with
    the original by ``strength``, in linear light when ``linear``."""

    steps: tuple
    repeat: int = 1
    strength: float = 1.0
    linear: bool = False

    def __post_init__(self):
        steps = tuple(s if isinstance(s, Step) else Step(s, s.name) for s in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps:
            raise ValueError("a chain needs at least one filter")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or not 1 <= self.repeat <= MAX_REPEAT:
            raise ValueError(f"repeat must be a whole number from 1 to {MAX_REPEAT}, got {self.repeat!r}")
        strength = self.strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
        object.__setattr__(self, "strength", float(strength))

    @classmethod
    def of(cls, flt, **options):
        """A chain of the one filter ``flt``."""
        return cls((Step(flt, flt.name),), **options)

    @property
    def name(self) -> str:
        """The chain as text, e.g. ``gaussian:sigma=2,sharpen``."""
        return ",".join(step.text for step in self.steps)

    @property
    def filters(self) -> tuple:
        return tuple(step.filter for step in self.steps)

    @property
    def kernels(self) -> tuple:
        """Every kernel of every step, in order."""
        return tuple(k for step in self.steps for k in step.filter.kernels)

    @property
    def is_plain(self) -> bool:
        """One filter, once, at full strength, not in linear light."""
        return len(self.steps) == 1 and self.repeat == 1 and self.strength == 1.0 and not self.linear

    def describe(self) -> str:
        """The chain with its options, for titles: ``blur then sharpen (2 times, strength 0.5)``."""
        text = " then ".join(step.text for step in self.steps)
        extras = []
        if self.repeat != 1:
            extras.append(f"{self.repeat} times")
        if self.strength != 1.0:
            extras.append(f"strength {self.strength:g}")
        if self.linear:
            extras.append("linear light")
        return text + (" (" + ", ".join(extras) + ")" if extras else "")

    def oriented(self, orientation: int) -> Chain:
        """The chain that does to the stored pixels of a picture tagged with EXIF
        ``orientation`` what this chain does to the picture as displayed: every
        kernel turned by :func:`imgconv.kernels.orient_kernel` (exact, for every
        border mode).  Orientation 1 returns the chain itself."""
        if orientation == 1:
            return self
        steps = tuple(dataclasses.replace(step, filter=orient_filter(step.filter, orientation)) for step in self.steps)
        return dataclasses.replace(self, steps=steps)

    def equivalent(self, out_range=None):
        """``(kernel, None)``: the single kernel that does what the chain does
        (up to the borders), or ``(None, reason)`` when the chain is not linear.

        ``out_range`` replaces the last step's, as for :func:`apply_chain`."""
        for index, step in enumerate(self.steps):
            flt = step.filter
            where = f"'{step.text}'"
            mapping = out_range if (out_range is not None and index == len(self.steps) - 1) else flt.out_range
            if flt.combine != "single":
                return None, f"{where} combines {len(flt.kernels)} kernels by {flt.combine}"
            if flt.bias:
                return None, f"{where} adds a bias of {flt.bias:g}"
            if mapping != "clip":
                return None, f"{where} maps its result by out-range {mapping}"
        # The equivalent kernel grows by (k - 1) per step and repeat: bounded like every other kernel.
        height = 1 + self.repeat * sum(step.filter.kernels[0].matrix.shape[0] - 1 for step in self.steps)
        width = 1 + self.repeat * sum(step.filter.kernels[0].matrix.shape[1] - 1 for step in self.steps)
        if height > MAX_KERNEL_SIDE or width > MAX_KERNEL_SIDE:
            return None, (
                f"the equivalent kernel would be {height}x{width}, larger than the "
                f"{MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE} limit on kernels"
            )
        matrix = None
        for _ in range(self.repeat):
            for step in self.steps:
                kernel = step.filter.kernels[0].matrix
                matrix = kernel if matrix is None else compose(matrix, kernel)
        if self.strength != 1.0:
            blended = matrix * self.strength
            blended[matrix.shape[0] // 2, matrix.shape[1] // 2] += 1.0 - self.strength
            matrix = blended
        return Kernel(matrix), None


# ---------------------------------------------------------------------------
# parsing


def split_chain(text) -> list[str]:
    """The comma-separated items of ``text``, keeping commas inside [...]."""
    items, depth, current = [], 0, []
    for char in str(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def _group(texts):
    """Items grouped into steps: a ``KEY=VALUE`` item joins the step before it."""
    steps = []
    for text in texts:
        items = split_chain(text)
        if len(items) == 1 and not items[0].strip():
            raise CatalogError("empty chain: give a filter name, [matrix] or @file")
        for item in items:
            item = item.strip()
            if not item:
                raise CatalogError(f"empty step in chain {text!r} (two commas in a row, or one at an end)")
            if _KEY_VALUE.match(item) and ":" not in item.split("=", 1)[0] and steps and not item.startswith(("@", "[")):
                steps[-1].append(item)
            else:
                steps.append([item])
    return steps


def _split_params(head, extra):
    """``name:k=v:k=v`` -> (name, ["k=v", ...]) plus the items in ``extra``."""
    name, _, rest = head.partition(":")
    pairs = [p for p in rest.split(":")] if rest else []
    return name.strip(), pairs + list(extra)


def _kernel_options(pairs, where):
    values = parse_assignments(pairs)
    normalize, scale = False, 1.0
    for key, value in values.items():
        if key == "normalize":
            normalize = parse_bool(value)
            if normalize is None:
                raise CatalogError(f"{where}: normalize must be true or false, got {value!r}")
        elif key == "scale":
            try:
                scale = float(value)
            except ValueError:
                scale = math.nan
            if not math.isfinite(scale):
                raise CatalogError(f"{where}: scale must be a finite number, got {value!r}")
        else:
            raise CatalogError(f"{where}: unknown parameter {key!r}; a kernel step takes {', '.join(_KERNEL_STEP_PARAMS)}")
    return normalize, scale


def _matrix_step(item, extra):
    depth = 0
    for end, char in enumerate(item):
        depth += char == "["
        depth -= char == "]"
        if depth == 0:
            break
    else:
        raise CatalogError(f"step {item!r}: '[' without its closing ']'")
    body, rest = item[1:end], item[end + 1 :]
    if rest and not rest.startswith(":"):
        raise CatalogError(f"step {item!r}: expected ':KEY=VALUE' after ']', got {rest!r}")
    pairs = [p for p in rest[1:].split(":")] if rest else []
    label = shorten("[" + " ".join(body.split()) + "]")  # a 41x41 kernel is kilobytes of text
    loaded = parse_inline_kernel(body, label=f"kernel {label}")
    normalize, scale = _kernel_options(pairs + list(extra), f"kernel {label}")
    return Step(loaded.to_filter(normalize=normalize, scale=scale, name=label), ",".join([item, *extra]), loaded)


def _file_step(item, extra):
    path, pairs = item[1:], []
    if not os.path.exists(path):
        match = _TRAILING_PARAMS.search(path)
        if match:
            pairs = [p for p in match.group(1)[1:].split(":")]
            path = path[: match.start()]
    if not path:
        raise CatalogError(f"step {item!r}: '@' must be followed by a kernel file name")
    if not os.path.exists(path):
        raise CatalogError(f"kernel file '{path}' not found")
    loaded = read_kernel_file(path)
    normalize, scale = _kernel_options(pairs + list(extra), f"kernel file '{path}'")
    name = os.path.basename(path)
    return Step(loaded.to_filter(normalize=normalize, scale=scale, name=name), ",".join([item, *extra]), loaded)


def _catalog_step(item, extra, catalog):
    name, pairs = _split_params(item, extra)
    if not name:
        raise CatalogError(f"step {item!r}: a filter name must come before ':'")
    flt = catalog.resolve(name, parse_assignments(pairs))
    return Step(flt, ",".join([item, *extra]))


def parse_chain(texts, catalog, *, kernels=(), params=()) -> Chain:
    """A :class:`Chain` from chain text(s) and ``--kernel`` specs.

    Parameters
    ----------
    texts : str or list of str
        Chains, applied one after another (``["blur", "sharpen"]`` is
        ``"blur,sharpen"``).
    catalog : imgconv.kernels.Catalog
        Where names are looked up.
    kernels : list of str
        ``--kernel`` values (inline matrix text or a kernel file), appended
        as steps after ``texts``.
    params : list of str
        ``-p KEY=VALUE`` pairs: allowed only for a chain of one catalog filter.

    Raises
    ------
    CatalogError
        A syntax error, an unknown name or parameter, bad inline numbers, a
        missing kernel file (usage mistakes).
    KernelFileError
        A kernel file that cannot be read or parsed.
    """
    if isinstance(texts, str):
        texts = [texts]
    groups = _group(texts) if texts else []
    steps = []
    numbered = len(groups) + len(kernels) > 1
    for number, (item, *extra) in enumerate(groups, 1):
        try:
            if item.startswith("@"):
                step = _file_step(item, extra)
            elif item.startswith("["):
                step = _matrix_step(item, extra)
            else:
                step = _catalog_step(item, extra, catalog)
        except CatalogError as exc:
            if numbered:
                raise CatalogError(f"step {number} of the chain: {exc}") from exc
            raise
        steps.append(step)
    for spec in kernels:
        loaded = load_kernel(spec)
        label = os.path.basename(loaded.source) if loaded.source != "inline" else "[" + " ".join(str(spec).split()) + "]"
        steps.append(Step(loaded.to_filter(name=shorten(label)), label, loaded))
    if not steps:
        raise CatalogError("no filter given: name one (or a chain), or give --kernel")
    if params:
        if len(steps) != 1 or steps[0].loaded is not None:
            raise CatalogError("-p applies to a single catalog filter; in a chain write NAME:KEY=VALUE, e.g. gaussian:sigma=2,sharpen")
        (item, *extra) = groups[0]
        name, pairs = _split_params(item, extra)
        given = parse_assignments(pairs)
        more = parse_assignments(params)
        for key in more:
            if key in given:
                raise CatalogError(f"parameter '{key}' given twice: in '{item}' and as -p {key}={more[key]}")
        flt = catalog.resolve(name, {**given, **more})
        steps = [Step(flt, steps[0].text)]
    return Chain(tuple(steps))


# ---------------------------------------------------------------------------
# applying


def apply_chain(
    image,
    chain,
    *,
    mode: str = "reflect",
    cval: float = 0.0,
    alpha: str = "premultiplied",
    has_alpha: bool | None = None,
    out_range: str | None = None,
    backend: str = "auto",
    strategy: str = "auto",
    threads: int | None = None,
    explain: bool = False,
):
    """Apply a :class:`Chain` (or one :class:`~imgconv.kernels.Filter`) to an image.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        As for :func:`imgconv.apply_filter`; the result has its dtype.
    chain : Chain or Filter
    mode, cval, alpha, has_alpha, backend, strategy, threads
        As for :func:`imgconv.apply_filter` (``cval`` in the image's units;
        with ``chain.linear`` it is decoded like the pixels).
    out_range : {"clip", "abs", "offset", "normalize"}, optional
        Replaces the out-range of the chain's last step.
    explain : bool
        Also return the :class:`imgconv.filtering.Pass` list of the
        convolutions that ran (those of one round: a repeat runs the same plans).

    Returns
    -------
    ndarray in the image's dtype (and the passes when ``explain``).

    Examples
    --------
    >>> import numpy as np
    >>> from imgconv import load_catalog
    >>> sharpen = load_catalog().resolve("sharpen")
    >>> apply_chain(np.full((3, 3), 2**31 - 1, np.int32), Chain.of(sharpen, repeat=2))[0]
    array([2147483520, 2147483520, 2147483520], dtype=int32)
    """
    from imgconv import filtering
    from imgconv.colour import linear_to_srgb, srgb_to_linear
    from imgconv.engine.finish import to_dtype

    if isinstance(chain, Filter):
        chain = Chain.of(chain)
    if not isinstance(chain, Chain):
        raise ValueError(f"chain must be a Chain or a Filter, got {type(chain).__name__}")
    options = dict(mode=mode, alpha=alpha, backend=backend, strategy=strategy, threads=threads)
    passes = [] if explain else None

    def step_filter(work, step, step_cval, step_out_range):
        result = filtering.apply_filter(
            work, step.filter, cval=step_cval, has_alpha=has_alpha, out_range=step_out_range, explain=explain, **options
        )
        if not explain:
            return result
        result, ran = result
        if not recorded:
            passes.extend(dataclasses.replace(p, filter=step.text, note=why or p.note) for p in ran)
        return result

    recorded = False
    why = ""  # why the whole-image route runs (for --explain)
    if chain.is_plain:
        result = step_filter(image, chain.steps[0], cval, out_range)
        return (result, passes) if explain else result

    array = filtering.check_image(image)
    if array.dtype.kind == "b":
        raise ValueError("boolean images are not supported: convert to uint8 or float first")
    channels = 1 if array.ndim == 2 else array.shape[2]
    has_alpha = filtering.check_has_alpha(has_alpha, channels)
    cval = filtering.check_cval(cval)

    streamed, why = _stream_chain(array, chain, mode, cval, alpha, has_alpha, out_range, backend, strategy, threads)
    if streamed is not None:
        result, ran = streamed
        return (result, ran) if explain else result

    scale = filtering.full_scale(array.dtype)
    work = array.astype(np.float32)  # always a copy
    if scale != 1.0:
        work *= np.float32(1.0 / scale)
    cval = cval / scale
    colour = (Ellipsis, slice(0, channels - 1)) if has_alpha else Ellipsis
    if chain.linear:
        work[colour] = srgb_to_linear(work[colour])
        cval = float(srgb_to_linear(cval))
    original = work if chain.strength != 1.0 else None

    last = len(chain.steps) - 1
    for _ in range(chain.repeat):
        for index, step in enumerate(chain.steps):
            work = step_filter(work, step, cval, out_range if index == last else None)
        recorded = True

    if original is not None:
        work = original + np.float32(chain.strength) * (work - original)
        if has_alpha:
            np.clip(work[..., -1], 0.0, 1.0, out=work[..., -1])
    if chain.linear:
        work[colour] = linear_to_srgb(work[colour])
    if scale != 1.0:
        work *= np.float32(scale)
    result = to_dtype(work, array.dtype)
    return (result, passes) if explain else result


class _Decode(PointLayer):
    """sRGB-encoded rows to linear light (float32, 0..1) as they enter: a table lookup for
    8 and 16 bits (the table holds what ``srgb_to_linear`` gives each level, so it is the
    whole-image decoding exactly); alpha scaled to 0..1."""

    compiled = False  # set by _stream_chain: the route of the convolutions

    def __init__(self, dtype, channels, has_alpha, scale):
        from imgconv.colour import srgb_to_linear

        self.dtype, self.channels, self.has_alpha = np.dtype(dtype), channels, has_alpha
        self.inverse = np.float32(1.0 / scale)
        if self.dtype.kind == "u":
            levels = np.arange(np.iinfo(self.dtype).max + 1, dtype=np.float32) * self.inverse
            self.table, self.alpha_table = srgb_to_linear(levels), levels
        else:
            self.table = None

    def decode(self, rows, out):
        """``rows`` (source dtype) decoded into ``out`` (float32, the same shape)."""
        from imgconv.colour import srgb_to_linear

        if self.table is not None:
            from imgconv.engine.stream import points_module

            points_module(self.compiled).decode_rows(rows, self.table, self.alpha_table, self.channels, self.has_alpha, out)
            return
        n = rows.shape[0]
        colour = slice(0, self.channels - 1) if self.has_alpha else slice(None)
        work = rows.reshape(n, -1, self.channels).astype(np.float32)
        if self.inverse != 1:
            work *= self.inverse
        work[..., colour] = srgb_to_linear(work[..., colour])
        out.reshape(n, -1, self.channels)[...] = work

    def compute(self, prev, index, r0, r1, out):
        from imgconv.engine.stream import rows_of

        self.decode(rows_of(prev, index, r0, r1), out)


class _Leave(PointLayer):
    """The chain's last per-row layer: the blend with the original rows (``strength``), alpha
    clipped, sRGB encoding (``linear``), the image's dtype: what :func:`apply_chain` does to
    the whole image after the last step, to each band of rows."""

    compiled = False  # set by _stream_chain: the route of the convolutions

    def __init__(self, source, chain, dtype, channels, has_alpha, scale, decode):
        from imgconv.filtering import store_spec

        self.source, self.strength, self.linear = source, np.float32(chain.strength), chain.linear
        self.dtype, self.channels, self.has_alpha, self.scale, self.decode = np.dtype(dtype), channels, has_alpha, scale, decode
        self.unit = np.float32(1.0 if chain.linear else scale)  # full intensity in the work's units
        self.finish = store_spec(self.dtype)
        if self.dtype.kind == "u":
            levels = np.arange(np.iinfo(self.dtype).max + 1, dtype=np.float32)
            # Each level of an original row in the work's units: decoded, or as it is.
            self.table, self.alpha_table = (decode.table, decode.alpha_table) if decode is not None else (levels, levels)
        else:
            self.table = self.alpha_table = np.empty(0, np.float32)

    def compute(self, prev, index, r0, r1, out):
        from imgconv.colour import linear_to_srgb, srgb_encoder
        from imgconv.engine.finish import to_dtype
        from imgconv.engine.stream import points_module, rows_of
        from imgconv.filtering import store_spec

        points = points_module(self.compiled)
        work = rows_of(prev, index, r0, r1)  # this band's rows of the last step, changed in place
        n = r1 - r0
        source = self.source[r0:r1]
        if self.strength != 1.0:
            target = work if self.linear else out
            finish = store_spec(np.float32) if self.linear else self.finish
            blend = (self.strength, self.channels, self.has_alpha, self.unit, finish, target)
            if source.dtype != np.float32:
                points.blend_rows(work, source, self.table, self.alpha_table, *blend)
            else:
                if self.decode is not None:  # float32 in linear light: decoded here
                    decoded = np.empty(work.shape, np.float32)
                    self.decode.decode(source, decoded)
                    source = decoded
                points.blend_float_rows(work, source, *blend)
            if not self.linear:
                return
        if self.dtype == np.uint8:  # 8 bits: encoded by table, exactly
            encoder = srgb_encoder()
            alpha_scale = np.float32(self.scale) if self.has_alpha else np.float32(0.0)
            points.encode_rows(
                work, work.view(np.int32), encoder.levels, encoder.limits, encoder.SHIFT, encoder.offset, encoder.count,
                self.channels, alpha_scale, out,
            )
            return
        cells = work.reshape(n, -1, self.channels)
        colour = cells[..., : self.channels - 1] if self.has_alpha else cells
        colour[...] = linear_to_srgb(colour)
        if self.scale != 1.0:
            work *= np.float32(self.scale)
        out[...] = to_dtype(work, self.dtype)


def _stream_chain(array, chain, mode, cval, alpha, has_alpha, out_range, backend, strategy, threads):
    """:func:`apply_chain` row by row, band by band (``engine/stream.py``):
    ``((result, passes), None)``, or ``(None, why not)`` where the image is of another dtype
    than uint8, uint16 or float32, or a plan is not the band driver's (the GPU, the FFT);
    then the whole-image route below runs, and ``--explain`` says why on each pass.

    The work is in the image's own units (uint8 rows are read by the first step as they
    are), or in linear light 0..1; results equal the whole-image route's to float32 round-off.
    """
    from imgconv import choices, filtering
    from imgconv.colour import srgb_to_linear
    from imgconv.engine.finish import Finish
    from imgconv.engine.plan import check_request, make_plan
    from imgconv.engine.run import canonical_rows, thread_count
    from imgconv.engine.stream import ConvLayer, kernels_of, run_layers, streams

    filtering.check_choice(alpha, filtering.ALPHA_POLICIES, "alpha")
    if out_range is not None:
        filtering.check_choice(out_range, filtering.OUT_RANGES, "out_range")
    check_request(backend, strategy)
    mode = choices.canonical_mode(mode)
    last = len(chain.steps) - 1
    for step in chain.steps:
        filtering.resolve_filter(step.filter)
    why = filtering.streamable(array.dtype)
    if why is not None:
        return None, why
    rows, channels = canonical_rows(array)
    height, width = array.shape[:2]
    shape = (height, width, channels)
    count = thread_count(threads)
    scale = filtering.full_scale(array.dtype)
    unit = 1.0 if chain.linear else scale  # full intensity in the work's units
    work_cval = float(srgb_to_linear(cval / scale)) if chain.linear else cval
    options = filtering._Options(mode, work_cval, backend, strategy, threads)
    leaves = chain.strength != 1.0 or chain.linear
    decode = _Decode(array.dtype, channels, has_alpha, scale) if chain.linear else None
    layers = [decode] if decode is not None else []
    total = chain.repeat * len(chain.steps)
    for number in range(total):
        index = number % len(chain.steps)
        step = chain.steps[index]
        flt = step.filter
        step_range = out_range if (index == last and out_range is not None) else flt.out_range
        dtype = array.dtype if (number == total - 1 and not leaves) else np.float32
        if has_alpha:
            layer = filtering.AlphaLayer(flt, shape, options, alpha, unit, step_range, dtype, count, step.text)
        elif flt.combine != "single" or step_range == "normalize":
            layer = filtering.FilterLayer(flt, shape, options, unit, step_range, dtype, count, step.text)
        else:
            kernel = flt.kernels[0]
            plan = make_plan(kernel.matrix, shape, backend=backend, strategy=strategy, factors=kernel.factors)
            finish = Finish(dtype, *filtering.pixel_mapping(flt.bias, step_range, unit))
            layer = ConvLayer(plan, shape, mode, work_cval, finish, count, filtering.Pass(step.text, 1, 1, "all", plan, filtering.STREAMED))
        for plan in layer.plans:
            if not streams(plan):
                return None, f"whole image: '{step.text}' runs {plan.strategy} on {plan.backend}, which takes whole images"
        layers.append(layer)
    if leaves:
        layers.append(_Leave(rows, chain, array.dtype, channels, has_alpha, scale, decode))
        compiled_route = any(kernel.compiled for layer in layers for kernel in kernels_of(layer))
        for layer in (layers[0], layers[-1]):
            if isinstance(layer, (_Decode, _Leave)):
                layer.compiled = compiled_route
    out = np.empty(rows.shape, array.dtype)
    run_layers(layers, rows, out, threads=threads)
    first_round = layers[1 if decode is not None else 0 :][: len(chain.steps)]  # a repeat runs the same plans
    passes = [p for layer in first_round for p in layer.passes]
    return (out.reshape(array.shape), passes), None


def float_copies(chain, *, has_alpha: bool, dtype, out_range: str | None = None, alpha: str = "premultiplied") -> float:
    """How many full-size float32 copies of the image (all its channels) :func:`apply_chain`
    holds at its peak, beyond the input and the output (for the memory guard,
    :func:`imgconv.memory.memory_needed`).

    A plain chain is its one filter (:func:`imgconv.filtering.float_copies`).  A chain on
    a uint8, uint16 or float32 image runs band by band (``_stream_chain``): 0.
    Otherwise (other dtypes), from the code above: the float32 work image, and each step's
    float32 result while the work image is still held (2), plus what the step
    itself holds filtering a float32 image; with a strength other than 1 the
    original is kept (1) and the blend makes 2 temporaries (2).  Linear light
    decodes and encodes the colour through float64 temporaries
    (``colour.srgb_to_linear``): 10 float32 copies with the work image's
    (measured: a gaussian in linear light on RGB peaks at 11 in all).
    ``blur,sharpen`` on RGB measured 1.8 (counted 2).
    """
    from imgconv import filtering

    if isinstance(chain, Filter):
        chain = Chain.of(chain)
    last = len(chain.steps) - 1
    if chain.is_plain:
        return filtering.float_copies(chain.steps[0].filter, has_alpha=has_alpha, dtype=dtype, out_range=out_range, alpha=alpha)
    if filtering.streamable(dtype) is None:
        return 0  # streamed band by band (engine/stream.py): band buffers, not counted
    step_most = max(
        filtering.float_copies(
            step.filter, has_alpha=has_alpha, dtype=np.float32, out_range=out_range if index == last else None, alpha=alpha
        )
        for index, step in enumerate(chain.steps)
    )
    kept = 1 if chain.strength != 1.0 else 0
    steps = max(2 + kept + step_most, 4 * kept)  # filtering, then blending (work, original, 2 temporaries)
    return max(steps, 1 + kept + 10) if chain.linear else steps
