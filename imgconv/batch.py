"""Filtering files: one file (``filter_file``), or every image under a folder
(``run_batch``), with a report that counts what was done, skipped and failed.

A job is plain data (the resolved filter and its options) and each file is
handled by a pure function of (job, source, destination), so the files can be
handed to any executor that maps a function over work items.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from imgconv.errors import ImgconvError


@dataclass(frozen=True)
class Job:
    """What to do to every file: a resolved catalog filter and how to apply it."""

    filter: object  # imgconv.catalog.Filter
    mode: str = "reflect"
    cval: float = 0.0
    alpha: str = "premultiplied"
    out_range: str | None = None
    backend: str = "auto"
    strategy: str = "auto"


def filter_file(job, source, destination):
    """Read ``source``, filter it, write ``destination`` atomically.

    The whole input is decoded before anything is written, so ``destination``
    may be ``source``.
    """
    from imgconv import io
    from imgconv.api import apply_filter

    image = io.read_image(source)
    try:
        pixels = apply_filter(
            image.pixels,
            job.filter,
            mode=job.mode,
            cval=job.cval,
            backend=job.backend,
            strategy=job.strategy,
            alpha=job.alpha,
            has_alpha=image.has_alpha,
            out_range=job.out_range,
        )
    except MemoryError:
        height, width = image.pixels.shape[:2]
        raise ImgconvError(f"not enough memory to filter '{source}' ({width}x{height})") from None
    io.write_image(destination, pixels, like=image)


@dataclass
class FileResult:
    source: str
    destination: str | None
    status: str  # "done" | "skipped" | "failed"
    message: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    """Counts of what a batch did; the exit code follows from it."""

    results: list = field(default_factory=list)

    def add(self, result):
        self.results.append(result)

    def _count(self, status):
        return sum(1 for r in self.results if r.status == status)

    @property
    def done(self):
        return self._count("done")

    @property
    def skipped(self):
        return self._count("skipped")

    @property
    def failed(self):
        return self._count("failed")

    @property
    def failures(self):
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self):
        return 1 if self.failed else 0

    def summary(self):
        return f"{self.done} done, {self.skipped} skipped (not images), {self.failed} failed"


def _inside(path, folder):
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def find_files(in_dir, out_dir):
    """Every file under ``in_dir``, recursively and in a stable order, except
    those under ``out_dir`` (which may lie inside ``in_dir``)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    found = []
    for folder, subfolders, files in os.walk(in_dir):
        folder = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not _inside(folder / d, out_dir))
        found.extend(folder / name for name in sorted(files))
    return found


def process_one(job, source, destination):
    """Filter one file and describe the outcome; a failure never raises."""
    started = time.perf_counter()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        filter_file(job, source, destination)
    except (ImgconvError, OSError) as exc:
        return FileResult(str(source), str(destination), "failed", str(exc), time.perf_counter() - started)
    return FileResult(str(source), str(destination), "done", "", time.perf_counter() - started)


def run_batch(job, in_dir, out_dir, *, on_result=None):
    """Filter every image under ``in_dir`` into the same relative path under ``out_dir``.

    Files that are not images (by extension) are skipped and counted; a file
    that fails is named in the report and the rest go on.  ``on_result`` is
    called with each :class:`FileResult` as it arrives.
    """
    from imgconv import io

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise ImgconvError(f"input folder '{in_dir}' does not exist or is not a folder")
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise ImgconvError(f"output folder '{out_dir}' is the input folder: the outputs would replace the inputs")
    report = Report()
    for source in find_files(in_dir, out_dir):
        if io.is_image_path(source):
            result = process_one(job, source, out_dir / source.relative_to(in_dir))
        else:
            result = FileResult(str(source), None, "skipped", "not an image file")
        report.add(result)
        if on_result is not None:
            on_result(result)
    return report
