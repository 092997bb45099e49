"""The one per-file path: read, check, filter, write.

Everything that filters a file goes through here: ``imgconv apply`` (a file, or
standard input and output), the batch workers (local processes and Dask), and
``imgconv gallery`` (which reads and checks here, then filters a thumbnail).

A :class:`Job` is plain, picklable data: the :class:`~imgconv.chain.Chain`
to run (a single filter is ``Chain.of(flt)``) and the options it runs with.
:func:`filter_file` is a pure function of (job, source, destination):

1. read ``source`` (a file, or ``"-"`` for standard input), completely (every
   frame or page), so that ``destination`` may be ``source``;
2. check it (:func:`check_linear_light`: an image whose ICC profile is not
   sRGB-coded is refused in linear light, where it would be misread);
3. filter it (:func:`filter_frames`: :func:`imgconv.chain.apply_chain` with
   the job's options on each frame, as on that frame alone; running out of
   memory becomes an :class:`~imgconv.errors.ImgconvError` naming the file
   and its size); the filters act on the image as displayed: an EXIF
   Orientation turns the kernels, not the pixels (:func:`as_displayed`);
4. write ``destination`` (a file, atomically, or ``"-"`` for standard output)
   in the format :func:`output_format` decides, keeping metadata, and the
   frames with their timing where the format holds them.

What an output cannot keep is reported by :mod:`imgconv.io` as
:class:`~imgconv.errors.ImgconvWarning` warnings, left to the caller to show
or collect.  This module does not import numba; filtering does (and
:func:`warm_up`, for processes that fork filtering processes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from imgconv import io
from imgconv.chain import Chain, apply_chain
from imgconv.choices import FILE_FORMATS, ORIENTATION_FRAMES
from imgconv.errors import ImageError, ImgconvError
from imgconv.filemeta import check_quality

__all__ = [
    "Job",
    "Filtered",
    "filter_file",
    "filter_image",
    "filter_frames",
    "read_checked",
    "as_displayed",
    "job_float_copies",
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
    quality : int, optional
        JPEG and WebP quality of the outputs, 1..100 (see
        :func:`imgconv.io.write_image`); None: follow each input's own.
    orientation : {"displayed", "stored"}
        The frame the filters act in: the image as a viewer displays it (its
        EXIF Orientation; the kernels are turned to the stored pixels, which
        are kept, and so is the tag), or as stored.
    """

    chain: Chain
    mode: str = "reflect"
    cval: float = 0.0
    alpha: str = "premultiplied"
    out_range: str | None = None
    backend: str = "auto"
    strategy: str = "auto"
    threads: int | None = None
    quality: int | None = None
    orientation: str = "displayed"

    def __post_init__(self):
        check_quality(self.quality)
        if self.orientation not in ORIENTATION_FRAMES:
            raise ValueError(f"orientation must be one of {', '.join(ORIENTATION_FRAMES)}, got {self.orientation!r}")
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
    frames : int
        How many frames or pages were filtered (1 for a single image).
    """

    shape: tuple[int, ...]
    format: str
    plans: tuple = ()
    frames: int = 1

    @property
    def megapixels(self) -> float:
        """Width x height (of the first frame) times the frames, in millions of pixels."""
        return self.shape[0] * self.shape[1] * self.frames / 1e6 if len(self.shape) >= 2 else 0.0


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


def read_checked(source, *chains: Chain, float_copies=0, pillow_rows=False) -> io.ImageData:
    """Read ``source`` and refuse it if any of ``chains`` cannot filter it.

    Parameters
    ----------
    source : str or os.PathLike
        An image file, or ``"-"`` for the whole of standard input.
    *chains : imgconv.chain.Chain
        The chains that will filter the image (see :func:`check_linear_light`).
    float_copies : int or callable
        What filtering it holds, for the memory guard (see
        :func:`imgconv.io.read_image` and :func:`job_float_copies`); 0 where
        the image is not filtered at full size (a gallery) or by one filter.
    pillow_rows : bool
        See :func:`imgconv.io.read_image` (8-bit RGB left in Pillow's 4-byte rows).

    Returns
    -------
    imgconv.io.ImageData

    Raises
    ------
    ImageError
        When the file cannot be read (see :func:`imgconv.io.read_image`) or a
        chain cannot filter it.
    """
    image = io.read_image(source, float_copies=float_copies, pillow_rows=pillow_rows)
    for chain in chains:
        check_linear_light(image, display_name(source), chain)
    return image


def job_float_copies(job: Job):
    """For the memory guard: a function of ``has_alpha`` giving the full-size float32
    copies of the image that ``job``'s filtering holds (:func:`imgconv.chain.float_copies`)."""
    from imgconv.chain import float_copies

    def copies(has_alpha):
        # The decoded dtype is not known before decoding; every dtype io gives is native.
        return float_copies(job.chain, has_alpha=has_alpha, dtype=np.uint8, out_range=job.out_range, alpha=job.alpha)

    return copies


def as_displayed(job: Job, image: io.ImageData) -> Job:
    """``job`` for ``image``'s stored pixels: with ``job.orientation`` "displayed"
    and an EXIF Orientation other than 1, its chain turned by the orientation
    (:meth:`imgconv.chain.Chain.oriented`), so that the filters act on the image
    as a viewer shows it; otherwise ``job`` itself."""
    if job.orientation != "displayed" or image.orientation == 1:
        return job
    return dataclasses.replace(job, chain=job.chain.oriented(image.orientation))


def filter_image(job: Job, image: io.ImageData, name: str = "the image") -> tuple[np.ndarray, tuple]:
    """Filter ``image`` (its first frame, ``image.pixels``) as ``job`` says;
    :func:`filter_frames` filters every frame.

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
    return _filter_pixels(as_displayed(job, image), image.pixels, image.has_alpha, name)


def filter_frames(job: Job, image: io.ImageData, name: str = "the image") -> tuple[tuple[np.ndarray, ...], tuple]:
    """Filter every frame or page of ``image``, each exactly as filtering it alone.

    A single image is filtered as :func:`filter_image` filters it.

    Returns
    -------
    frames : tuple of numpy.ndarray
        The filtered frames, the first included (``image.frame_count`` of
        them), each in its frame's dtype and shape.
    plans : tuple of imgconv.filtering.Pass
        The convolutions that ran on the first frame, then those of any page
        of another size (TIFF); frames of one size run the same plans
        (memoised), listed once.

    Raises
    ------
    ImgconvError
        When there is not enough memory (the message names the image, its
        size and the frame).
    """
    job = as_displayed(job, image)  # every frame shares the file's EXIF Orientation
    count = image.frame_count
    frames, runs = [], []  # runs: the distinct lists of passes, in order
    for index, pixels in enumerate(image.all_frames()):
        frame = f", frame {index + 1} of {count}" if count > 1 else ""
        filtered, passes = _filter_pixels(job, pixels, image.has_alpha, name, frame)
        frames.append(filtered)
        if passes not in runs:
            runs.append(passes)
    return tuple(frames), tuple(one for passes in runs for one in passes)


def _filter_pixels(job, pixels, has_alpha, name, frame=""):
    """(filtered pixels, passes) of one frame."""
    try:
        filtered, plans = apply_chain(
            pixels,
            job.chain,
            mode=job.mode,
            cval=job.cval,
            alpha=job.alpha,
            has_alpha=has_alpha,
            out_range=job.out_range,
            backend=job.backend,
            strategy=job.strategy,
            threads=job.threads,
            explain=True,  # recording the passes costs nothing; --explain prints them
        )
    except MemoryError as exc:
        height, width = pixels.shape[:2]
        raise ImgconvError(f"not enough memory to filter '{name}' ({width}x{height}{frame})") from exc
    return filtered, tuple(plans)


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


def _pillow_rows(job: Job):
    """For :func:`imgconv.io.read_image`: 8-bit RGB stays in Pillow's 4-byte rows where the
    job's one filter hands them to the compiled kernels as they are (they read them and
    write the encoder's: neither side packs, ``engine.run.padded_rows``); elsewhere (a
    chain, the numpy route, the FFT, the GPU) they would be packed anyway, and the packed
    copy would sit beside them: packed when read, as before."""
    if not job.chain.is_plain:
        return False
    from imgconv import filtering

    def decide(width, height):
        flt = job.chain.steps[0].filter
        try:
            return filtering.takes_pillow_rows(flt, (height, width, 3), out_range=job.out_range, backend=job.backend, strategy=job.strategy)
        except (ValueError, ImgconvError):  # refused when it runs, with its own message
            return False

    return decide


def filter_file(job: Job, source, destination, *, out_format: str | None = None, open_folder=None) -> Filtered:
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
    open_folder : callable, optional
        Called once the image is filtered, just before writing: returns a
        context manager that yields the opened folder (a file descriptor) to
        write ``destination``'s name in, or None to write by path (see
        ``dir_fd`` of :func:`imgconv.io.write_image`).  The batch checks,
        creates and opens the output's folder there, at the moment of writing.

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
    image = read_checked(source, job.chain, float_copies=job_float_copies(job), pillow_rows=_pillow_rows(job))
    fmt = output_format(destination, image, out_format)
    frames, plans = filter_frames(job, image, display_name(source))
    shape = image.pixels.shape
    # Writing needs the input's metadata, not its pixels: let them go, so that the
    # output and the encoder's copy of it are the peak (imgconv.memory.memory_needed).
    image = dataclasses.replace(image, pixels=frames[0], more_frames=frames[1:])
    with (open_folder or contextlib.nullcontext)() as dir_fd:
        io.write_image(destination, frames[0], like=image, format=fmt, quality=job.quality, more_frames=frames[1:], dir_fd=dir_fd)
    return Filtered(shape=shape, format=fmt, plans=plans, frames=len(frames))


def warm_up() -> None:
    """Import what filtering a file uses and set numba's compiler up (its typing and
    target registries: about 0.45 s of a process's first kernel load), without starting
    numba's threads, which a fork would not carry over: processes forked from this one
    then filter at once (the batch pool's workers, the resident worker's copies)."""
    global _warm
    if _warm:
        return
    from PIL import Image

    from imgconv import filtering  # noqa: F401 - imports the engine, and numba
    from imgconv.engine import cpu, plan, run  # noqa: F401 - sets numba's cache folder first

    import numba

    Image.init()
    # A plain (not parallel) kernel: compiling or loading it fills the registries; a
    # parallel one would start numba's threads.
    numba.njit(cache=True)(_warm_up_kernel)(1.0)
    _warm = True


_warm = False


def _warm_up_kernel(x):
    return x + 1.0
