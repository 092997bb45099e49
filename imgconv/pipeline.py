"""The one per-file path: read, check, filter, write.

Everything that filters a file goes through here: ``imgconv apply`` (a file, or
standard input and output), the batch workers (local processes and Dask), and
``imgconv gallery`` (which reads and checks here, then filters a thumbnail).

A :class:`Job` is plain, picklable data: the :class:`~imgconv.chain.Chain`
to run (a single filter is ``Chain.of(flt)``) and the options it runs with.
:func:`filter_file` is a pure function of (job, source, destination):

1. read ``source`` (a file, or ``"-"`` for standard input), completely, so that
   ``destination`` may be ``source``;
2. check it (:func:`check_linear_light`: an image whose ICC profile is not
   sRGB-coded is refused in linear light, where it would be misread);
3. filter it (:func:`filter_image`: :func:`imgconv.chain.apply_chain` with
   the job's options; running out of memory becomes an
   :class:`~imgconv.errors.ImgconvError` naming the file and its size);
4. write ``destination`` (a file, atomically, or ``"-"`` for standard output)
   in the format :func:`output_format` decides, keeping metadata.

What an output cannot keep is reported by :mod:`imgconv.io` as
:class:`~imgconv.errors.ImgconvWarning` warnings, left to the caller to show
or collect.  This module does not import numba; filtering does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from imgconv import io
from imgconv.chain import Chain, apply_chain
from imgconv.choices import FILE_FORMATS
from imgconv.errors import ImageError, ImgconvError

__all__ = [
    "Job",
    "Filtered",
    "filter_file",
    "filter_image",
    "read_checked",
    "check_linear_light",
    "output_format",
    "display_name",
]

#: The format written to standard output when the input's is not one imgconv writes.
STDOUT_DEFAULT_FORMAT = "PNG"


@dataclass(frozen=True)
class Job:
    """What to do to every file: a chain and the options it runs with.

    Attributes
    ----------
    chain : imgconv.chain.Chain
        The filters to run; a single filter is ``Chain.of(flt)``.
    mode : {"reflect", "mirror", "nearest", "wrap", "constant"}
        Border mode (or an alias; see :func:`imgconv.choices.canonical_mode`).
    cval : float
        The value beyond the border in ``constant`` mode, in pixel units.
    alpha : {"premultiplied", "separate", "ignore"}
        How the alpha channel is treated.
    out_range : {"clip", "abs", "offset", "normalize"}, optional
        Replaces the out-range of the chain's last step.
    backend : {"auto", "cpu", "cuda"}
    strategy : {"auto", "direct", "separable", "fft"}
    threads : int, optional
        Compute threads; None: numba's setting.
    """

    chain: Chain
    mode: str = "reflect"
    cval: float = 0.0
    alpha: str = "premultiplied"
    out_range: str | None = None
    backend: str = "auto"
    strategy: str = "auto"
    threads: int | None = None

    def __post_init__(self):
        if not isinstance(self.chain, Chain):
            raise TypeError(
                f"Job.chain must be an imgconv.chain.Chain (Chain.of(flt) for one filter), got {type(self.chain).__name__}"
            )


@dataclass(frozen=True)
class Filtered:
    """What :func:`filter_file` did.

    Attributes
    ----------
    shape : tuple of int
        The shape of the image's pixel array, (H, W) or (H, W, C).
    format : str
        The format written, as Pillow names it (``"PNG"``, ``"JPEG"``, ...).
    plans : tuple
        The plans that ran, in order, for ``--explain``; empty where the
        filtering does not report them.
    """

    shape: tuple[int, ...]
    format: str
    plans: tuple = ()

    @property
    def megapixels(self) -> float:
        """Width x height, in millions of pixels."""
        return self.shape[0] * self.shape[1] / 1e6 if len(self.shape) >= 2 else 0.0


def display_name(path) -> str:
    """``path`` as messages name it: ``"<stdin>"`` for ``"-"``, else the path."""
    if isinstance(path, str) and path == io.STDIO:
        return io.STDIN_NAME
    return os.fspath(path)


def check_linear_light(image: io.ImageData, name: str, chain: Chain) -> None:
    """Refuse to filter ``image`` in linear light when its ICC profile is not sRGB-coded.

    Linear light decodes the pixels with sRGB's tone curve: an image whose
    profile has another tone curve would be misread.

    Parameters
    ----------
    image : imgconv.io.ImageData
    name : str
        The image as the message names it (a file name, ``"<stdin>"``).
    chain : imgconv.chain.Chain
        The chain that will filter it; only ``chain.linear`` matters.

    Raises
    ------
    ImageError
        When ``chain.linear`` is set and the profile's tone curves are not sRGB's.
    """
    if not (chain.linear and image.icc_profile):
        return
    from imgconv.colour import check_srgb_profile

    problem = check_srgb_profile(image.icc_profile)
    if problem:
        raise ImageError(f"cannot filter '{name}' in linear light: {problem}; convert it to sRGB first, or leave out --linear")


def read_checked(source, *chains: Chain) -> io.ImageData:
    """Read ``source`` and refuse it if any of ``chains`` cannot filter it.

    Parameters
    ----------
    source : str or os.PathLike
        An image file, or ``"-"`` for the whole of standard input.
    *chains : imgconv.chain.Chain
        The chains that will filter the image (see :func:`check_linear_light`).

    Returns
    -------
    imgconv.io.ImageData

    Raises
    ------
    ImageError
        When the file cannot be read (see :func:`imgconv.io.read_image`) or a
        chain cannot filter it.
    """
    image = io.read_image(source)
    for chain in chains:
        check_linear_light(image, display_name(source), chain)
    return image


def filter_image(job: Job, image: io.ImageData, name: str = "the image") -> tuple[np.ndarray, tuple]:
    """Filter ``image`` as ``job`` says.

    Parameters
    ----------
    job : Job
    image : imgconv.io.ImageData
        Its ``has_alpha`` says whether the last channel is alpha.
    name : str
        The image as messages name it.

    Returns
    -------
    pixels : numpy.ndarray
        The filtered pixels, in the image's dtype and shape.
    plans : tuple of imgconv.filtering.Pass
        Every convolution that ran, with the shape it ran on and its plan.

    Raises
    ------
    ImgconvError
        When there is not enough memory (the message names the image and its size).
    """
    try:
        pixels, plans = apply_chain(
            image.pixels,
            job.chain,
            mode=job.mode,
            cval=job.cval,
            alpha=job.alpha,
            has_alpha=image.has_alpha,
            out_range=job.out_range,
            backend=job.backend,
            strategy=job.strategy,
            threads=job.threads,
            explain=True,  # recording the passes costs nothing; --explain prints them
        )
    except MemoryError as exc:
        height, width = image.pixels.shape[:2]
        raise ImgconvError(f"not enough memory to filter '{name}' ({width}x{height})") from exc
    return pixels, tuple(plans)


def output_format(destination, image: io.ImageData | None = None, out_format: str | None = None) -> str:
    """The format to write ``destination`` in, as Pillow names it.

    ``out_format`` when given (``"png"``, ``"jpg"``, ...); else, for
    standard output (``"-"``), the input ``image``'s format when imgconv writes
    it, otherwise PNG; else the one ``destination``'s extension names.

    Raises
    ------
    ImageError
        For an unknown ``out_format`` or extension.
    """
    if out_format is not None:
        return io.format_name(out_format)
    if isinstance(destination, str) and destination == io.STDIO:
        given = (image.format or "").upper() if image is not None else ""
        return given if given in FILE_FORMATS else STDOUT_DEFAULT_FORMAT
    return io.output_format(destination)


def filter_file(job: Job, source, destination, *, out_format: str | None = None) -> Filtered:
    """Read ``source``, check it, filter it, write ``destination``.

    The whole input is decoded before anything is written, and a file is
    written atomically, so ``destination`` may be ``source`` and is never left
    partial.

    Parameters
    ----------
    job : Job
    source : str or os.PathLike
        An image file, or ``"-"`` for standard input.
    destination : str or os.PathLike
        The output file (its folder must exist), or ``"-"`` for standard
        output (written in one piece, once complete).
    out_format : str, optional
        The output format (``"png"``, ``"jpg"``, ...) instead of the one the
        extension names (see :func:`output_format`).

    Returns
    -------
    Filtered

    Raises
    ------
    ImgconvError
        An :class:`~imgconv.errors.ImageError` for a file that cannot be read,
        checked or written; an ImgconvError when memory runs out.
    ValueError
        For options the filtering refuses.

    Warns
    -----
    ImgconvWarning
        For what the input's decoding or the output's format loses.
    """
    image = read_checked(source, job.chain)
    fmt = output_format(destination, image, out_format)
    pixels, plans = filter_image(job, image, display_name(source))
    io.write_image(destination, pixels, like=image, format=fmt)
    return Filtered(shape=image.pixels.shape, format=fmt, plans=plans)
