"""The ``imgconv`` command line (the only Click user).

``list``, ``show`` and ``--help`` never import numba: modules that compute are
imported inside the commands that compute.  User mistakes exit with 2 (Click's
usage errors), failures while working exit with 1, each as one line.
"""

import contextlib
import functools
import gc
import os
import signal
import sys
import threading
import warnings

import click
from click.shell_completion import CompletionItem

from imgconv import choices
from imgconv.chain import MAX_REPEAT
from imgconv.errors import CatalogError, ImgconvError, ImgconvWarning

OUT_RANGE_CHOICES = choices.OUT_RANGES
ALPHA_CHOICES = choices.ALPHA_POLICIES


def _echo_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


DEBUG_ENV = "IMGCONV_DEBUG"


def _one_line(text) -> str:
    """A message as one line: control characters (a newline in a file name) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _quiet_broken_pipe():
    """The reader of standard output went away (``imgconv list | head -1``): end
    quietly with exit 0, as Unix tools do, without a second error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


@contextlib.contextmanager
def _terminate_cleanly(active=True):
    """SIGTERM unwinds like Ctrl-C does (``finally`` blocks remove temporary
    files), ending with exit 143; ``batch`` keeps its own handling of signals."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted():
    """Ctrl-C: the files being written have removed their temporaries while the
    interrupt unwound; exit 130 at once, without waiting for a compiled kernel
    still running in its helper thread (see engine.run)."""
    click.echo("interrupted", err=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(130)


def _interrupted_while_starting(signum, frame):
    """Ctrl-C before any command has started (while Click parses the arguments):
    nothing has been written yet, so end as an interrupted command ends, with 130
    (Click's own handling would print "Aborted!" and exit 1)."""
    _interrupted()


@contextlib.contextmanager
def _interrupts_until_a_command_starts():
    """Ctrl-C ends the process at once until a command's own handling takes over
    (``reports_errors`` hands SIGINT back to Python's KeyboardInterrupt).  Left
    alone where SIGINT is ignored or already handled by somebody else."""
    try:
        installed = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if installed:
            signal.signal(signal.SIGINT, _interrupted_while_starting)
    except ValueError:  # not the main thread: nothing to install
        installed = False
    try:
        yield
    finally:
        if installed:
            _command_handles_interrupts()


def _command_handles_interrupts():
    """SIGINT back to Python's KeyboardInterrupt, where :func:`_interrupts_until_a_command_starts` set it."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def reports_errors(command):
    """The one place where failures become what the user sees: one line, never a traceback.

    User-fixable problems (``ImgconvError``, ``OSError``, a ``ValueError`` from a
    check) exit 1 with their message; anything else is a bug, reported as one
    line naming the command and the exception (exit 1), with the full traceback
    only when ``IMGCONV_DEBUG=1``.  Warnings are shown as one line each.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _command_handles_interrupts()
        with warnings.catch_warnings(), _terminate_cleanly(command.__name__ != "batch"):
            warnings.simplefilter("always", ImgconvWarning)
            warnings.showwarning = _echo_warning
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt:
                _interrupted()
            except BrokenPipeError:
                _quiet_broken_pipe()
            except (click.ClickException, click.exceptions.Exit, click.Abort):
                raise
            except (ImgconvError, OSError, ValueError) as exc:
                raise click.ClickException(_one_line(exc)) from exc
            except MemoryError as exc:
                raise click.ClickException(f"not enough memory for '{command.__name__}'") from exc
            except Exception as exc:
                if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
                    raise
                name = command.__name__.removesuffix("_command")
                raise click.ClickException(
                    _one_line(f"internal error in '{name}': {type(exc).__name__}: {exc} "
                              f"(run with {DEBUG_ENV}=1 for the traceback, and please report it)")
                ) from exc

    return wrapper


def _catalog(ctx):
    """The catalog for this invocation: built-ins, IMGCONV_CATALOG, then --catalog files."""
    state = ctx.find_root().obj
    if state.get("catalog") is None:
        from imgconv.kernels import load_catalog

        try:
            state["catalog"] = load_catalog(state["catalog_paths"])
        except CatalogError as exc:
            raise click.ClickException(str(exc)) from exc
    return state["catalog"]


def _check_mode(ctx, param, value):
    try:
        return choices.canonical_mode(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


# Options shared by the commands that filter, defined once.
param_option = click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    shell_complete=lambda ctx, param, incomplete: _complete_params(ctx, param, incomplete),
    help="A filter parameter, e.g. -p sigma=2 (repeatable; in a chain write NAME:KEY=VALUE).",
)
mode_option = click.option(
    "--mode",
    default="reflect",
    show_default=True,
    callback=_check_mode,
    help="Border mode: reflect, mirror, nearest, wrap or constant (aliases: reflect101, replicate, symmetric, ...).",
)
def _check_finite(ctx, param, value):
    """A number option must be finite: click's FLOAT (and FloatRange) let nan and inf through."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value!r}", ctx, param)
    return value


cval_option = click.option(
    "--cval",
    type=float,
    default=0.0,
    show_default=True,
    callback=_check_finite,
    help="Value beyond the border in constant mode, in pixel units.",
)
out_range_option = click.option(
    "--out-range",
    type=click.Choice(OUT_RANGE_CHOICES),
    default=None,
    help="How signed results become pixels (default: the filter's own, usually clip).",
)
alpha_option = click.option(
    "--alpha",
    type=click.Choice(ALPHA_CHOICES),
    default="premultiplied",
    show_default=True,
    help="Filter colour premultiplied by alpha, each channel separately, or leave alpha untouched.",
)
backend_option = click.option(
    "--backend",
    type=click.Choice(("auto", "cpu", "cuda")),
    default="auto",
    show_default=True,
    help="Where to compute: auto uses an NVIDIA GPU for large images when one is there "
    "(cuda needs pip install 'imgconv[cuda12]' or '[cuda13]').",
)
strategy_option = click.option(
    "--strategy",
    type=click.Choice(("auto", "direct", "separable", "fft")),
    default="auto",
    show_default=True,
    help="Force a convolution strategy (auto lets imgconv choose).",
)
explain_option = click.option("--explain", is_flag=True, help="Say which strategy and backend run each kernel, and why.")
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Compute threads (default: all cores, or NUMBA_NUM_THREADS).",
)


# --repeat, --strength, --linear and --quality are kept in ctx.meta under this key.
_CHAIN_OPTIONS = "imgconv.chain_options"


def _remember(ctx, param, value):
    """Keep a chain option (--repeat, --strength, --linear) or --quality for _make_job,
    so the commands that share them need no parameters of their own for them."""
    if param.name == "strength" and value is not None and not (0 <= value < float("inf")):
        raise click.BadParameter(f"must be a finite number >= 0, got {value}", ctx, param)
    ctx.meta.setdefault(_CHAIN_OPTIONS, {})[param.name] = value
    return value


quality_option = click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=None,
    expose_value=False,
    callback=_remember,
    metavar="Q",
    help="JPEG and WebP quality, 1..100 (WebP becomes lossy). Default: a JPEG from a JPEG keeps "
    "its tables, subsampling and progressive mode, other JPEGs get 95 with 4:4:4 chroma; WebP is "
    "lossless unless the input was lossy (then lossy at the input's estimated quality).",
)
# Kept in ctx.meta like the chain options: read by _make_job and gallery.
orientation_option = click.option(
    "--orientation",
    type=click.Choice(choices.ORIENTATION_FRAMES),
    default="displayed",
    show_default=True,
    expose_value=False,
    callback=_remember,
    help="Filter the image as a viewer displays it (its EXIF Orientation: directional filters turn with the "
    "photo; the pixels and the tag are kept as stored), or as stored in the file.",
)
repeat_option = click.option(
    "--repeat",
    type=click.IntRange(1, MAX_REPEAT),
    default=1,
    show_default=True,
    expose_value=False,
    callback=_remember,
    metavar="N",
    help="Run the whole filter or chain N times.",
)
strength_option = click.option(
    "--strength",
    type=float,
    default=1.0,
    show_default=True,
    expose_value=False,
    callback=_remember,
    metavar="S",
    help="Blend with the original: 0 = unchanged, 1 = filtered, above 1 extrapolates (as unsharp masking does).",
)
linear_option = click.option(
    "--linear",
    is_flag=True,
    expose_value=False,
    callback=_remember,
    help="Filter in linear light: decode sRGB before, encode after (float precision throughout).",
)
kernel_option = click.option(
    "--kernel",
    "kernels",
    multiple=True,
    metavar="MATRIX|FILE",
    shell_complete=lambda ctx, param, incomplete: [CompletionItem(incomplete, type="file")],
    help='A kernel instead of (or after) a named filter: "0 -1 0; -1 5 -1; 0 -1 0", ImageMagick "3x3: ...", '
    "or a file (.mat, .npy, .csv, .txt). Repeatable.",
)


def _completion_catalog(ctx):
    """The catalog while completing (the group's callback has not run): None if it cannot load."""
    from imgconv.kernels import load_catalog

    try:
        return load_catalog(list(ctx.find_root().params.get("catalog_paths") or ()))
    except (ImgconvError, OSError):
        return None


def _complete_chain(ctx, param, incomplete):
    """Kernel names, and after NAME: its parameter names (a chain's last step)."""
    from imgconv.chain import split_chain

    catalog = _completion_catalog(ctx)
    if catalog is None:
        return []
    current = split_chain(incomplete)[-1]
    before = incomplete[: len(incomplete) - len(current)]
    if current.startswith(("@", "[")):
        return []
    if ":" in current:
        name, _, rest = current.partition(":")
        try:
            entry = catalog.entry(name)
        except CatalogError:
            return []
        pairs = rest.split(":")
        typed, given = pairs[-1], {p.split("=", 1)[0] for p in pairs[:-1]}
        if "=" in typed:
            return []
        head = incomplete[: len(incomplete) - len(typed)]
        return [
            CompletionItem(f"{head}{p}=", help=entry.params[p].description or None)
            for p in entry.params
            if p.startswith(typed) and p not in given
        ]
    items = []
    for entry in catalog.entries():
        for name in (entry.name, *entry.aliases):
            if name.startswith(current):
                items.append(CompletionItem(before + name, help=entry.description))
    return items


def _complete_params(ctx, param, incomplete):
    """-p KEY=: the parameters of the filter named first on the command line."""
    from imgconv.chain import split_chain

    # While an option still waits for its value, Click leaves the words before it in ctx.args.
    named = ctx.params.get("args") or ctx.params.get("chain") or ctx.params.get("name") or tuple(ctx.args)
    if isinstance(named, str):
        named = (named,)
    catalog = _completion_catalog(ctx)
    if not named or catalog is None or "=" in incomplete:
        return []
    try:
        entry = catalog.entry(split_chain(named[0])[0].partition(":")[0].strip())
    except CatalogError:
        return []
    return [CompletionItem(f"{p}=", help=entry.params[p].description or None) for p in entry.params if p.startswith(incomplete)]


def _complete_apply_args(ctx, param, incomplete):
    """The first word is a filter (or chain); later ones are files."""
    if not ctx.params.get("args") and not ctx.params.get("kernels"):
        return _complete_chain(ctx, param, incomplete)
    return [CompletionItem(incomplete, type="file")]


def _resolve_chain(ctx, names, params, kernels=()):
    """The Chain named on the command line (one filter is a one-step chain),
    with the --repeat, --strength and --linear this command was given."""
    import dataclasses

    from imgconv.chain import parse_chain
    from imgconv.errors import KernelFileError

    if isinstance(names, str):
        names = [names]
    catalog = _catalog(ctx)
    try:
        chain = parse_chain(list(names), catalog, kernels=list(kernels), params=list(params))
    except KernelFileError as exc:
        raise click.ClickException(str(exc)) from exc
    except CatalogError as exc:
        raise click.UsageError(str(exc), ctx) from exc
    options = ctx.meta.get(_CHAIN_OPTIONS, {})
    return dataclasses.replace(
        chain,
        repeat=options.get("repeat") or 1,
        strength=1.0 if options.get("strength") is None else options["strength"],
        linear=bool(options.get("linear")),
    )


def filter_options(command):
    for option in reversed([repeat_option, strength_option, linear_option]):
        command = option(command)
    for option in reversed(
        [param_option, mode_option, cval_option, out_range_option, alpha_option, backend_option, strategy_option, explain_option]
    ):
        command = option(command)
    return command


def _make_job(ctx, name, params, mode, cval, out_range, alpha, backend, strategy, threads=None, kernels=()):
    """The Job for ``name`` (a filter, a chain, or several: see imgconv.chain) and the options,
    checked before any file is read (nothing is planned yet: that needs the image's shape)."""
    from imgconv.engine.plan import check_kernel, check_request
    from imgconv.pipeline import Job

    chain = _resolve_chain(ctx, name, params, kernels)
    try:
        check_request(backend, strategy)
        for kernel in chain.kernels:
            check_kernel(kernel.matrix, strategy, kernel.factors)
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx) from exc
    if threads is not None:
        from imgconv.engine.run import thread_count

        try:
            thread_count(threads)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param_hint="--threads") from exc
    quality = ctx.meta.get(_CHAIN_OPTIONS, {}).get("quality")
    orientation = ctx.meta.get(_CHAIN_OPTIONS, {}).get("orientation") or "displayed"
    return Job(
        chain, mode=mode, cval=cval, alpha=alpha, out_range=out_range, backend=backend, strategy=strategy, threads=threads,
        quality=quality, orientation=orientation,
    )


def _explain(passes):
    """One line per convolution that ran: the step, the kernel, the shape it ran on, its plan."""
    for one in passes:
        click.echo(one.describe(), err=True)


def _explain_planned(job, shape):
    """The plans an image of ``shape`` would get (batch, before any file is read;
    each file is planned for its own shape when it runs)."""
    from imgconv.engine.plan import make_plan
    from imgconv.filtering import Pass

    for step in job.chain.steps:
        kernels = step.filter.kernels
        for index, kernel in enumerate(kernels, 1):
            plan = make_plan(kernel.matrix, shape, backend=job.backend, strategy=job.strategy, factors=kernel.factors)
            click.echo(Pass(step.text, index, len(kernels), "all", plan).describe(), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--catalog",
    "catalog_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="A YAML kernel catalog adding to or overriding the built-ins (repeatable; also IMGCONV_CATALOG).",
)
@click.version_option(package_name="imgconv")
@click.pass_context
def cli(ctx, catalog_paths):
    """Filter images by 2-D convolution with kernels from a catalog.

    \b
    imgconv list                          the filters and their parameters
    imgconv show gaussian -p sigma=2      the matrix a filter uses
    imgconv apply sharpen in.png out.png  filter one image
    imgconv apply blur,sharpen - out.png  a chain, the image from standard input
    imgconv batch blur photos/ out/       filter a folder tree
    imgconv gallery in.jpg sheet.png      in.jpg through every filter, labelled
    """
    ctx.obj = {"catalog_paths": list(catalog_paths), "catalog": None}


def _format_param(param):
    limits = ""
    if param.choices:
        limits = " (" + "|".join(str(c) for c in param.choices) + ")"
    elif param.minimum is not None or param.maximum is not None:
        low = "" if param.minimum is None else f"{param.minimum:g}"
        high = "" if param.maximum is None else f"{param.maximum:g}"
        limits = f" ({low}..{high})"
    default = "auto" if param.default is None else param.default
    return f"{param.name}={default}{limits}"


@cli.command("list", short_help="List the filters, their parameters and defaults.")
@click.pass_context
@reports_errors
def list_command(ctx):
    """List the filters: name, description, parameters with their defaults."""
    entries = _catalog(ctx).entries()
    width = max(len(e.name) for e in entries) + 2
    for entry in entries:
        line = f"{entry.name:<{width}}{entry.description}"
        if entry.aliases:
            line += f" (also: {', '.join(entry.aliases)})"
        click.echo(line)
        if entry.params:
            click.echo(" " * width + "  ".join(_format_param(p) for p in entry.params.values()))


def _filter_title(flt):
    settings = ", ".join(f"{k}={v}" for k, v in flt.params.items())
    return flt.name + (f" ({settings})" if settings else "")


def _show_filter(step, prefix, echo):
    """Print one filter (a chain step): its description, kernels and options."""
    from imgconv.kernels import format_matrix

    flt = step.filter
    settings = ", ".join(f"{k}={v}" for k, v in flt.params.items())
    echo(f"{prefix}{flt.name}: {flt.description}" + (f" [{settings}]" if settings else ""))
    loaded = step.loaded
    if loaded is not None and (loaded.written.shape != loaded.matrix.shape or not (loaded.written == loaded.matrix).all()):
        rows, cols = loaded.written.shape
        echo(f"\nas written ({loaded.format}, {rows}x{cols}):")
        echo(format_matrix(loaded.written))
    for index, kernel in enumerate(flt.kernels, 1):
        rows, cols = kernel.matrix.shape
        heading = f"kernel {index} of {len(flt.kernels)}" if len(flt.kernels) > 1 else "kernel"
        if loaded is not None:
            heading = "impulse response"
        separable = ", separable" if kernel.factors is not None else ""
        centre = f", centre at row {rows // 2 + 1}, column {cols // 2 + 1}" if loaded is not None else ""
        echo(f"\n{heading} ({rows}x{cols}{separable}, sum {kernel.matrix.sum():.6g}{centre}):")
        echo(format_matrix(kernel.matrix))
    if len(flt.kernels) > 1:
        echo(f"\ncombined by: {flt.combine}")
    if flt.bias:
        echo(f"bias: {flt.bias:g} of full scale")
    echo(f"out-range: {flt.out_range}")


@cli.command(short_help="Print the kernels of a filter, a chain or a kernel file.")
@click.argument("chain", nargs=-1, metavar="[CHAIN]...", shell_complete=_complete_chain)
@param_option
@kernel_option
@repeat_option
@strength_option
@click.option(
    "--plot",
    "plot_path",
    metavar="FILE",
    help="Also draw each kernel beside its frequency response into FILE (.png, ...; '-': PNG on standard output).",
)
@click.pass_context
@reports_errors
def show(ctx, chain, params, kernels, plot_path):
    """Print the matrix (or matrices) of a filter, a chain or a kernel file.

    A chain of linear filters also prints its equivalent single kernel.
    Kernels from --kernel are printed with their sum and impulse response.

    \b
    Examples:
      imgconv show gaussian -p sigma=2
      imgconv show gaussian:sigma=2,sharpen
      imgconv show --kernel edge.mat --plot edge.png
    """
    from imgconv.kernels import format_matrix

    if plot_path is not None and plot_path != "-":
        from imgconv import io

        try:
            io.output_format(plot_path)
        except ImgconvError as exc:
            raise click.BadParameter(str(exc), ctx, param_hint="--plot") from exc
    resolved = _resolve_chain(ctx, chain, params, kernels)
    steps = resolved.steps
    # With --plot -, the picture is all that goes to standard output.
    echo = (lambda text: None) if plot_path == "-" else click.echo
    several = len(steps) > 1
    for number, step in enumerate(steps, 1):
        if number > 1:
            echo("")
        _show_filter(step, f"step {number} of {len(steps)}: " if several else "", echo)
    equivalent = None
    if not resolved.is_plain:
        options = []
        if resolved.repeat != 1:
            options.append(f"repeated {resolved.repeat} times")
        if resolved.strength != 1.0:
            options.append(f"at strength {resolved.strength:g}")
        equivalent, reason = resolved.equivalent()
        what = "the chain" + (" " + ", ".join(options) if options else "")
        if equivalent is None:
            echo(f"\nno single equivalent kernel for {what}: {reason}")
        else:
            rows, cols = equivalent.matrix.shape
            echo(f"\nequivalent single kernel of {what} ({rows}x{cols}, sum {equivalent.matrix.sum():.6g}):")
            echo(format_matrix(equivalent.matrix))
    if plot_path is not None:
        _plot(resolved, steps, equivalent, plot_path)


def _plot(resolved, steps, equivalent, path):
    from imgconv import io, plot

    notes = []
    if equivalent is not None:
        title = resolved.describe()
        panels = [("equivalent kernel", equivalent.matrix)]
    else:
        title = " then ".join(_filter_title(s.filter) for s in steps)
        if resolved.repeat != 1 or resolved.strength != 1.0:
            notes.append("each step drawn on its own: the chain has no single equivalent kernel")
        panels = []
        for step in steps:
            flt = step.filter
            for index, kernel in enumerate(flt.kernels, 1):
                label = f"{flt.name}: kernel {index} of {len(flt.kernels)}" if len(flt.kernels) > 1 else flt.name
                panels.append((label if len(steps) > 1 or len(flt.kernels) > 1 else "kernel", kernel.matrix))
            if len(flt.kernels) > 1:
                notes.append(f"{flt.name}: kernels combined by {flt.combine}")
            if flt.bias:
                notes.append(f"{flt.name}: bias {flt.bias:g} of full scale")
    if len(steps) == 1 and steps[0].filter.description:
        notes.insert(0, steps[0].filter.description)
    picture = plot.kernel_picture(title, panels, notes=notes)
    io.write_image(path, picture, format="png" if path == "-" else None)


def _format_option(default_for_stdout):
    return click.option(
        "--format",
        "out_format",
        metavar="EXT",
        help="The output format (png, jpg, tif, webp, bmp, gif) instead of OUT's extension; "
        f"for OUT '-' the default is {default_for_stdout}.",
    )


format_option = _format_option("the input's format")
sheet_format_option = _format_option("PNG")


def _check_in_out(ctx, source, destination, out_format):
    """Before any work: --format (or OUT's extension, for a file) is a format
    imgconv writes, and a '-' for IN or OUT is not a terminal (which would hang
    or fill it with bytes)."""
    from imgconv import io

    try:
        if out_format is not None:
            io.format_name(out_format)
        elif destination != io.STDIO:
            io.output_format(destination)
    except ImgconvError as exc:
        raise click.BadParameter(str(exc), ctx, param_hint="--format" if out_format else "OUT") from exc
    if source == io.STDIO and sys.stdin.isatty():
        raise click.UsageError("IN is '-' but standard input is a terminal: pipe an image in (< in.png)", ctx)
    if destination == io.STDIO and sys.stdout.isatty():
        raise click.UsageError("OUT is '-' but standard output is a terminal: redirect it (> out.png) or name a file", ctx)


@cli.command(short_help="Filter image IN with a filter or a chain and write OUT.")
@click.argument("args", nargs=-1, metavar="[CHAIN]... IN OUT", shell_complete=_complete_apply_args)
@kernel_option
@filter_options
@threads_option
@format_option
@quality_option
@orientation_option
@click.pass_context
@reports_errors
def apply(ctx, args, kernels, params, mode, cval, out_range, alpha, backend, strategy, explain, threads, out_format):
    """Filter image IN with a filter (or a chain of them) and write OUT.

    OUT's format follows its extension (or --format).  IN and OUT may be '-'
    for standard input and output.  A chain runs its filters in order, with
    one decode and one encode: NAME[:KEY=VALUE...] steps separated by commas,
    inline kernels in [...] and kernel files as @FILE; several CHAIN words
    run one after another.

    \b
    Examples:
      imgconv apply sharpen photo.jpg sharp.jpg
      imgconv apply gaussian -p sigma=3 scan.tif soft.tif
      imgconv apply gaussian:sigma=2,sharpen in.png out.png
      imgconv apply unsharp --strength 0.5 --linear in.png out.png
      imgconv apply --kernel "0 -1 0; -1 5 -1; 0 -1 0" in.png out.png
      cat in.jpg | imgconv apply blur - - --format png > out.png
    """
    import os

    from imgconv import io

    if len(args) < 2:
        missing = "IN and OUT" if not args else "OUT"
        raise click.UsageError(f"missing {missing}: imgconv apply [CHAIN]... IN OUT", ctx)
    *names, source, destination = args
    if not names and not kernels:
        if source in _catalog(ctx) and not os.path.exists(source):
            raise click.UsageError(f"missing OUT: imgconv apply {source} IN OUT", ctx)
        raise click.UsageError("no filter given: name one (or a chain) before IN, or give --kernel", ctx)
    if source != io.STDIO:
        if not os.path.exists(source):
            raise click.BadParameter(f"file '{source}' does not exist", ctx, param_hint="IN")
        if os.path.isdir(source):
            raise click.BadParameter(f"'{source}' is a folder, not an image file", ctx, param_hint="IN")
    _check_in_out(ctx, source, destination, out_format)
    job = _make_job(ctx, names, params, mode, cval, out_range, alpha, backend, strategy, threads, kernels=kernels)
    from imgconv.pipeline import filter_file

    filtered = filter_file(job, source, destination, out_format=out_format)
    if explain:
        _explain(filtered.plans)


class _BatchProgress:
    """What ``imgconv batch`` shows while it works: a progress bar on a terminal
    (click's own: files done / total, images per second, time left), a line per
    failure and warning, a notice on Ctrl-C.  A context manager: the bar, once
    started, is finished on the way out, however the batch ends."""

    def __init__(self, *, bar, quiet):
        import contextlib

        self.show_bar = bar
        self.quiet = quiet
        self.bar = None
        self.started = None
        self.finished = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.bar = None
        self._stack.close()  # leaves the bar's `with`: click draws its last state and a newline

    def start(self, total):
        import time

        self.started = time.perf_counter()
        if self.show_bar and total:
            self.bar = self._stack.enter_context(
                click.progressbar(
                    length=total,
                    label="filtering",
                    file=sys.stderr,
                    show_pos=True,
                    show_eta=True,
                    item_show_func=self._rate,
                )
            )

    def _rate(self, _item):
        import time

        elapsed = time.perf_counter() - self.started if self.started else 0.0
        return f"{self.finished / elapsed:.2f} images/s" if elapsed > 0 and self.finished else None

    def echo(self, text):
        if self.bar is not None:
            # Over the bar (clear its line, write the text), then the bar again below it.
            click.echo("\r\033[K" + text + "\n" + self.bar.format_progress_line(), nl=False, err=True)
        else:
            click.echo(text, err=True)

    def result(self, result):
        if result.status == "failed":
            self.echo(f"failed: {result.message}")
        if not self.quiet:
            for note in result.warnings:
                self.echo(f"warning: {note}")
        if self.started is not None:  # a file that was to be filtered (not one skipped up front)
            self.finished += result.status in ("done", "failed")
            if self.bar is not None:
                self.bar.update(1)

    def interrupt(self, in_progress, abandoning):
        if abandoning:
            self.echo(f"interrupted again: abandoning {in_progress} file(s) in progress")
        elif in_progress:
            self.echo(f"interrupted: finishing the {in_progress} file(s) in progress (Ctrl-C again to abandon them)")


@cli.command(short_help="Filter every image under IN_DIR into OUT_DIR.")
@click.argument("name", metavar="CHAIN", shell_complete=_complete_chain)
@click.argument("in_dir", metavar="IN_DIR", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False))
@filter_options
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=None, metavar="N",
    help="Worker processes (default: the number of cores); numba threads per worker = cores / N.",
)
@click.option("--overwrite", is_flag=True, help="Filter files whose output exists (by default they are skipped: a rerun resumes).")
@click.option("--include", multiple=True, metavar="GLOB", help="Filter only files matching GLOB (path under IN_DIR, file or folder name; repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out files matching GLOB (repeatable; wins over --include).")
@click.option("--format", "out_format", metavar="EXT", help="Write every output in this format, e.g. --format jpg (default: the input's).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="FILE", help="Write a JSON record of every file to FILE.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, warnings or summary; failures are still named.")
@click.option(
    "--scheduler", metavar="ADDRESS",
    help="Run on a Dask distributed cluster (tcp://host:8786), or 'local' for a LocalCluster; needs imgconv[dask].",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), callback=_check_finite, metavar="SECONDS",
    help="Fail a file that takes longer than SECONDS, and replace its worker (default: no limit).",
)
@quality_option
@orientation_option
@click.pass_context
@reports_errors
def batch(
    ctx, name, in_dir, out_dir, params, mode, cval, out_range, alpha, backend, strategy, explain,
    jobs, overwrite, include, exclude, out_format, report_path, quiet, scheduler, timeout,
):
    """Filter every image under IN_DIR (recursively) into the same paths under OUT_DIR.

    Outputs that exist are skipped (--overwrite to redo them), so running the
    same command again after a crash or Ctrl-C does only what is missing.
    Files that are not images (or not regular files) are skipped; a file that
    cannot be read, or takes longer than --timeout, or a folder that cannot be
    listed, is named and the rest go on.  Exits with 1 when any file failed, 130 when
    interrupted (Ctrl-C lets the files in progress finish; a second Ctrl-C
    abandons them; no output is ever left half-written).

    \b
    Examples:
      imgconv batch gaussian -p sigma=2 photos/ blurred/
      imgconv batch sharpen photos/ out/ --include '*.jpg' --exclude 'raw' --jobs 4
      imgconv batch blur photos/ thumbs/ --format webp --report report.json
      imgconv batch blur /shared/in /shared/out --scheduler tcp://scheduler:8786
    """
    import os

    from imgconv.batch import normalize_extension, run_batch

    extension = None
    if out_format is not None:
        try:
            extension = normalize_extension(out_format)
        except ImgconvError as exc:
            raise click.BadParameter(str(exc), ctx, param_hint="--format") from exc
    if report_path is not None:
        folder = os.path.dirname(os.path.abspath(report_path))
        if not os.path.isdir(folder):
            raise click.BadParameter(f"folder '{folder}' does not exist", ctx, param_hint="--report")
    job = _make_job(ctx, name, params, mode, cval, out_range, alpha, backend, strategy)
    if explain:
        click.echo("planned for a 4000x3000 RGB image (each file is planned for its own shape):", err=True)
        _explain_planned(job, (3000, 4000, 3))

    try:
        with _BatchProgress(bar=not quiet and sys.stderr.isatty(), quiet=quiet) as progress:
            report = run_batch(
                job, in_dir, out_dir, jobs=jobs, overwrite=overwrite, include=include, exclude=exclude,
                extension=extension, scheduler=scheduler, timeout=timeout,
                on_start=progress.start, on_result=progress.result, on_interrupt=progress.interrupt,
                _fork=True,  # this process is the command line's: its workers may be forked from it
            )
    except KeyboardInterrupt:
        click.echo("interrupted before any file was filtered", err=True)
        ctx.exit(130)
    if not quiet and (include or exclude) and not report.matched:
        import shlex

        patterns = " ".join([f"--include {shlex.quote(p)}" for p in include] + [f"--exclude {shlex.quote(p)}" for p in exclude])
        click.echo(f"no file under '{in_dir}' matched {patterns}: nothing to filter", err=True)
    if not quiet or report.interrupted:
        click.echo(report.summary(), err=True)  # first: a report that cannot be written costs no summary
    if report_path is not None:
        report.write_json(report_path)
    ctx.exit(report.exit_code)


@cli.command(short_help="A contact sheet of IN through each filter, labelled.")
@click.argument("source", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("destination", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-k",
    "--kernels",
    "kernel_list",
    metavar="LIST",
    shell_complete=_complete_chain,
    help="The filters to show, comma-separated, each with its parameters (chain syntax), e.g. blur,sharpen,gaussian:sigma=4. "
    "Default: every catalog filter.",
)
@click.option("--tile", "tile_chains", multiple=True, metavar="CHAIN", help="A tile filtered by a whole chain (repeatable).")
@click.option("--size", type=click.IntRange(32, 1024), default=192, show_default=True, help="Longest side of a tile in pixels; IN is scaled down to it before filtering.")
@click.option("--columns", type=click.IntRange(1, 100), default=None, help="Tiles per row (default: about as many as rows).")
@mode_option
@alpha_option
@linear_option
@sheet_format_option
@quality_option
@orientation_option
@click.pass_context
@reports_errors
def gallery(ctx, source, destination, kernel_list, tile_chains, size, columns, mode, alpha, out_format):
    """A contact sheet of IN through each chosen filter, each tile labelled.

    The first tile is IN itself.  OUT may be '-' (PNG on standard output).

    \b
    Examples:
      imgconv gallery photo.jpg sheet.png
      imgconv gallery photo.jpg sheet.png -k blur,sharpen,sobel,emboss --size 256
      imgconv gallery photo.jpg compare.png --tile gaussian:sigma=3 --linear
    """
    import dataclasses
    import os

    from imgconv import io, pipeline, plot
    from imgconv.chain import Chain, apply_chain, parse_chain

    if source != io.STDIO and not os.path.isfile(source):
        raise click.BadParameter(f"file '{source}' does not exist", ctx, param_hint="IN")
    _check_in_out(ctx, source, destination, out_format)
    linear = bool(ctx.meta.get(_CHAIN_OPTIONS, {}).get("linear"))
    catalog = _catalog(ctx)
    chains = []  # (label, Chain)
    try:
        if kernel_list:
            for step in parse_chain(kernel_list, catalog).steps:
                chains.append((step.text, Chain((step,), linear=linear)))
        for text in tile_chains:
            chain = parse_chain(text, catalog)
            chains.append((chain.name, dataclasses.replace(chain, linear=linear)))
    except CatalogError as exc:
        raise click.UsageError(str(exc), ctx) from exc
    if not chains:
        chains = [(name, Chain.of(catalog.resolve(name), linear=linear)) for name in catalog.names()]

    image = pipeline.read_checked(source, *(chain for _, chain in chains))
    shown = pipeline.display_name(source)
    if image.frame_count > 1:
        warnings.warn(f"'{shown}': the gallery shows the first of its {image.frame_count} frames", ImgconvWarning, stacklevel=2)
    small = plot.thumbnail(image.pixels, size, has_alpha=image.has_alpha)
    if ctx.meta.get(_CHAIN_OPTIONS, {}).get("orientation", "displayed") == "displayed" and image.orientation != 1:
        # The tiles are new images, without the tag: turned upright as a viewer shows the photo.
        import numpy as np

        from imgconv.kernels import orient_array

        small = np.ascontiguousarray(orient_array(small, image.orientation))
    tiles = [("original", plot.to_display(small, image.has_alpha))]
    unit, _ = plot.unit_float(small, image.has_alpha)  # float, so edge responses are not clipped before display
    stretched = 0
    for label, chain in chains:
        if plot.needs_stretch(chain):
            filtered = apply_chain(unit, chain, mode=mode, alpha=alpha, has_alpha=image.has_alpha)
            filtered = plot.stretch_for_display(filtered, chain, image.has_alpha)
            label, stretched = label + " *", stretched + 1
        else:
            filtered = apply_chain(small, chain, mode=mode, alpha=alpha, has_alpha=image.has_alpha)
        tiles.append((label, plot.to_display(filtered, image.has_alpha)))
    title = f"{os.path.basename(shown)} through {len(chains)} filter{'s' if len(chains) > 1 else ''}"
    if stretched:
        title += " (* contrast stretched for display)"
    if linear:
        title += ", in linear light"
    sheet = plot.contact_sheet(tiles, columns=columns, size=size, title=title)
    quality = ctx.meta.get(_CHAIN_OPTIONS, {}).get("quality")
    io.write_image(destination, sheet, format=pipeline.output_format(destination, out_format=out_format), quality=quality)


def main():
    """The ``imgconv`` command.

    Two start-up costs that buy nothing for one short-lived command are skipped
    (measured in docs/performance.md, "Start-up"): the cyclic garbage collector
    runs only on the first generation until the command ends (start-up builds
    ~100 000 long-lived objects, numba's, that it would scan again and again),
    and once numba has been imported the process ends with ``os._exit`` after
    flushing and closing standard output and error, instead of tearing those
    objects down one by one.  Every file imgconv writes is complete, fsynced
    and closed before this point (atomic writes), so nothing is lost.
    """
    gc.set_threshold(50_000, 1_000_000, 1_000_000)
    try:
        with _interrupts_until_a_command_starts():
            cli(prog_name="imgconv")
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    from imgconv import resident

    resident.note_use(sys.argv[1:])  # the second apply in a while starts a resident worker
    if "numba" not in sys.modules:
        sys.exit(code)
    _fast_exit(code)


def _fast_exit(code):
    """Flush and close standard output and error, run atexit handlers, and end the process."""
    import atexit

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message") prints the message and exits 1, as Python does
        print(code, file=sys.stderr)
        status = 1
    try:
        atexit._run_exitfuncs()
    except Exception:  # noqa: BLE001 - exiting regardless, as the interpreter would
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            pass  # the reader went away: quiet, as in _quiet_broken_pipe
        except (OSError, ValueError):
            if stream is sys.stdout and status == 0:
                status = 1  # standard output could not be written in full
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
