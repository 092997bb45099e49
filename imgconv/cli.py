"""The ``imgconv`` command line (the only Click user).

``list``, ``show`` and ``--help`` never import numba: modules that compute are
imported inside the commands that compute.  User mistakes exit with 2 (Click's
usage errors), failures while working exit with 1, each as one line.
"""

import functools
import sys
import warnings

import click

from imgconv import borders
from imgconv.errors import CatalogError, ImgconvError, ImgconvWarning

OUT_RANGE_CHOICES = ("clip", "abs", "offset", "normalize")
ALPHA_CHOICES = ("premultiplied", "separate", "ignore")


def _echo_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


def reports_errors(command):
    """Turn runtime failures into one line and exit code 1; show warnings as one line each."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("always", ImgconvWarning)
            warnings.showwarning = _echo_warning
            try:
                return command(*args, **kwargs)
            except (ImgconvError, OSError) as exc:
                raise click.ClickException(str(exc)) from exc

    return wrapper


def _catalog(ctx):
    """The catalog for this invocation: built-ins, IMGCONV_CATALOG, then --catalog files."""
    state = ctx.find_root().obj
    if state.get("catalog") is None:
        from imgconv.catalog import load_catalog

        try:
            state["catalog"] = load_catalog(state["catalog_paths"])
        except CatalogError as exc:
            raise click.ClickException(str(exc)) from exc
    return state["catalog"]


def _resolve(ctx, name, assignments):
    """The filter ``name`` with ``-p`` parameters; a bad name or value is a usage error."""
    from imgconv.catalog import parse_assignments

    catalog = _catalog(ctx)
    try:
        return catalog.resolve(name, parse_assignments(assignments))
    except CatalogError as exc:
        raise click.UsageError(str(exc), ctx) from exc


def _check_mode(ctx, param, value):
    try:
        return borders.canonical_mode(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


# Options shared by the commands that filter, defined once.
param_option = click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A filter parameter, e.g. -p sigma=2 (repeatable)."
)
mode_option = click.option(
    "--mode",
    default="reflect",
    show_default=True,
    callback=_check_mode,
    help="Border mode: reflect, mirror, nearest, wrap or constant (aliases: reflect101, replicate, symmetric, ...).",
)
cval_option = click.option(
    "--cval", type=float, default=0.0, show_default=True, help="Value beyond the border in constant mode, in pixel units."
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
    "--backend", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True, help="Where to compute."
)
strategy_option = click.option(
    "--strategy",
    type=click.Choice(("auto", "direct", "separable")),
    default="auto",
    show_default=True,
    help="Force a convolution strategy (auto lets imgconv choose).",
)
explain_option = click.option("--explain", is_flag=True, help="Say which strategy and backend run each kernel, and why.")


def filter_options(command):
    for option in reversed(
        [param_option, mode_option, cval_option, out_range_option, alpha_option, backend_option, strategy_option, explain_option]
    ):
        command = option(command)
    return command


def _make_job(ctx, name, params, mode, cval, out_range, alpha, backend, strategy):
    from imgconv.batch import Job
    from imgconv.plan import make_plan

    flt = _resolve(ctx, name, params)
    # Check the backend and strategy before any file is read.
    try:
        for kernel in flt.kernels:
            make_plan(kernel.matrix, (1, 1), backend=backend, strategy=strategy, factors=kernel.factors)
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx) from exc
    return Job(flt, mode=mode, cval=cval, alpha=alpha, out_range=out_range, backend=backend, strategy=strategy)


def _explain(job, shape):
    from imgconv.plan import make_plan

    for index, kernel in enumerate(job.filter.kernels, 1):
        factors = kernel.factors if job.strategy == "auto" else None
        plan = make_plan(kernel.matrix, shape, backend=job.backend, strategy=job.strategy, factors=factors)
        label = f"kernel {index} of {len(job.filter.kernels)}" if len(job.filter.kernels) > 1 else "kernel"
        click.echo(f"{job.filter.name}: {label} {kernel.matrix.shape[0]}x{kernel.matrix.shape[1]}: {plan.explain()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--catalog",
    "catalog_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
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
    imgconv batch blur photos/ out/       filter a folder tree
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


@cli.command("list")
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


@cli.command()
@click.argument("name")
@param_option
@click.pass_context
@reports_errors
def show(ctx, name, params):
    """Print the matrix (or matrices) of filter NAME with its parameters resolved."""
    from imgconv.catalog import format_matrix

    flt = _resolve(ctx, name, params)
    settings = ", ".join(f"{k}={v}" for k, v in flt.params.items())
    click.echo(f"{flt.name}: {flt.description}" + (f" [{settings}]" if settings else ""))
    for index, kernel in enumerate(flt.kernels, 1):
        rows, cols = kernel.matrix.shape
        heading = f"kernel {index} of {len(flt.kernels)}" if len(flt.kernels) > 1 else "kernel"
        separable = ", separable" if kernel.factors is not None else ""
        click.echo(f"\n{heading} ({rows}x{cols}{separable}, sum {kernel.matrix.sum():.6g}):")
        click.echo(format_matrix(kernel.matrix))
    if len(flt.kernels) > 1:
        click.echo(f"\ncombined by: {flt.combine}")
    if flt.bias:
        click.echo(f"bias: {flt.bias:g} of full scale")
    click.echo(f"out-range: {flt.out_range}")


@cli.command()
@click.argument("name")
@click.argument("source", metavar="IN", type=click.Path(exists=True, dir_okay=False))
@click.argument("destination", metavar="OUT", type=click.Path(dir_okay=False))
@filter_options
@click.pass_context
@reports_errors
def apply(ctx, name, source, destination, params, mode, cval, out_range, alpha, backend, strategy, explain):
    """Filter image IN with NAME and write OUT (its format from OUT's extension).

    \b
    Examples:
      imgconv apply sharpen photo.jpg sharp.jpg
      imgconv apply gaussian -p sigma=3 scan.tif soft.tif
      imgconv apply sobel --out-range normalize in.png edges.png
    """
    from imgconv import io

    try:
        io.output_format(destination)
    except ImgconvError as exc:
        raise click.BadParameter(str(exc), ctx, param_hint="OUT") from exc
    job = _make_job(ctx, name, params, mode, cval, out_range, alpha, backend, strategy)
    if explain:
        _explain(job, (0, 0))
    from imgconv.batch import filter_file

    filter_file(job, source, destination)


@cli.command()
@click.argument("name")
@click.argument("in_dir", metavar="IN_DIR", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False))
@filter_options
@click.pass_context
@reports_errors
def batch(ctx, name, in_dir, out_dir, params, mode, cval, out_range, alpha, backend, strategy, explain):
    """Filter every image under IN_DIR (recursively) into the same paths under OUT_DIR.

    Files that are not images are skipped; a file that cannot be read is
    named and the rest go on.  Exits with 1 when any file failed.

    \b
    Example:
      imgconv batch gaussian -p sigma=2 photos/ blurred/
    """
    from imgconv.batch import run_batch

    job = _make_job(ctx, name, params, mode, cval, out_range, alpha, backend, strategy)
    if explain:
        _explain(job, (0, 0))

    def on_result(result):
        if result.status == "failed":
            click.echo(f"failed: {result.message}", err=True)

    report = run_batch(job, in_dir, out_dir, on_result=on_result)
    click.echo(report.summary(), err=True)
    ctx.exit(report.exit_code)


def main():
    cli(prog_name="imgconv")


if __name__ == "__main__":
    sys.exit(main())
