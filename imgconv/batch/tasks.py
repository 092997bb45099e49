"""Which files a batch filters, and where each output goes.

:func:`plan_batch` walks the input folder (:func:`find_files`), applies the
include/exclude patterns (:func:`matches`), and decides for each file: a
:class:`Task` to filter, or a :class:`~imgconv.batch.report.FileResult` for a
file skipped or refused without filtering (its output exists, it is not an
image, its output would leave the output folder (:func:`escapes`), replace an
input or collide with another output).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from imgconv.batch.report import EXCLUDED, EXISTS, FAILED, NOT_IMAGE, SKIPPED, FileResult
from imgconv.errors import ImgconvError


@dataclass(frozen=True)
class Task:
    """One file to filter: ``source`` into ``destination`` (both absolute)."""

    source: Path
    destination: Path


def find_files(in_dir, out_dir) -> list[Path]:
    """Every file under ``in_dir``, recursively and in a stable order, except
    those under ``out_dir`` (which may lie inside ``in_dir``).  Symbolic links
    to files are listed; links to folders are not followed."""
    in_dir, out_dir = Path(in_dir), Path(out_dir).resolve()
    found = []
    for folder, subfolders, files in os.walk(in_dir):
        folder = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if (folder / d).resolve() != out_dir)
        found.extend(folder / name for name in sorted(files))
    return found


def matches(relative: str, patterns) -> bool:
    """Whether a path relative to the input folder (``a/b/c.jpg``) matches any
    glob pattern: the whole relative path, the file name, or any folder above
    it (``raw`` matches everything under ``raw/``).  Case-insensitive."""
    relative = relative.lower()
    parts = relative.split("/")
    candidates = [relative, parts[-1]]
    for depth in range(1, len(parts)):
        candidates.append("/".join(parts[:depth]))
        candidates.append(parts[depth - 1])
    return any(fnmatch.fnmatchcase(c, p.lower()) for p in patterns for c in candidates)


def normalize_extension(ext: str) -> str:
    """``"JPG"``, ``"jpg"`` or ``".jpg"`` -> ``".jpg"``; an unknown format is an ImageError."""
    from imgconv import io

    ext = "." + ext.strip().lstrip(".").lower()
    io.output_format("x" + ext)  # raises for an unknown extension
    return ext


def escapes(destination, out_dir) -> str | None:
    """Why writing ``destination`` would leave ``out_dir`` (a ``..`` in the
    name, or a folder on the way that is a symbolic link to elsewhere), or
    None when it stays inside.  Folders that do not exist yet count as inside."""
    folder = Path(destination).parent
    try:
        folder.resolve().relative_to(Path(out_dir).resolve())
    except ValueError:
        return f"'{folder}' leads outside the output folder '{out_dir}'"
    return None


def plan_batch(
    in_dir, out_dir, *, include=(), exclude=(), extension: str | None = None, overwrite: bool = False
) -> tuple[list[Task], list[FileResult]]:
    """Decide what the batch does with every file under ``in_dir``.

    Returns ``(tasks, results)``: the files to filter, and a :class:`FileResult`
    for each file decided without filtering (skipped, or failed because its
    output would overwrite an input, collide with another output or leave
    ``out_dir``).
    """
    from imgconv import io

    in_dir, out_dir = Path(in_dir).absolute(), Path(out_dir).absolute()
    if not in_dir.is_dir():
        raise ImgconvError(f"input folder '{in_dir}' does not exist or is not a folder")
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise ImgconvError(f"output folder '{out_dir}' is the input folder: the outputs would replace the inputs")
    if out_dir.exists() and not out_dir.is_dir():
        raise ImgconvError(f"output folder '{out_dir}' exists and is not a folder")
    sources = find_files(in_dir, out_dir)
    inputs = {os.path.realpath(p) for p in sources}
    claimed = {}
    tasks, results = [], []
    for source in sources:
        relative = source.relative_to(in_dir)
        if (include and not matches(relative.as_posix(), include)) or (exclude and matches(relative.as_posix(), exclude)):
            results.append(FileResult(str(source), None, SKIPPED, "left out by --include/--exclude", reason=EXCLUDED))
            continue
        if not io.is_image_path(source):
            results.append(FileResult(str(source), None, SKIPPED, "not an image file", reason=NOT_IMAGE))
            continue
        destination = out_dir / relative
        if extension is not None:
            destination = destination.with_suffix(extension)
        problem = escapes(destination, out_dir)
        if problem is None and os.path.realpath(destination) in inputs:
            problem = f"its output '{destination}' is an input file of this batch"
        if problem is None and destination in claimed:
            problem = f"its output '{destination}' is also the output of '{claimed[destination]}'"
        if problem is not None:
            results.append(FileResult(str(source), str(destination), FAILED, f"'{source}' not filtered: {problem}"))
            continue
        claimed[destination] = source
        if not overwrite and os.path.lexists(destination):
            results.append(FileResult(str(source), str(destination), SKIPPED, "output exists", reason=EXISTS))
            continue
        tasks.append(Task(source, destination))
    return tasks, results
