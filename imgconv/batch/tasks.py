"""Which files a batch filters, and where each output goes.

:func:`plan_batch` walks the input folder (:func:`find_files`), applies the
include/exclude patterns (:func:`matches`), and decides for each file: a
:class:`Task` to filter, or a :class:`~imgconv.batch.report.FileResult` for a
file skipped or refused without filtering (its output exists, it is not an
image or not a regular file, its output would leave the output folder
(:func:`escapes`), replace an input or collide with another output), and for
each folder that cannot be listed (a failure: its files are never seen).

An output is written through :func:`output_folder`: its folder is opened (and
created) one component at a time from the output folder down, never following
a symbolic link, and the file is written into that opened folder, so the check
that the output stays inside holds at the moment of writing.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from imgconv.batch.report import (
    EXCLUDED,
    EXISTS,
    FAILED,
    NOT_IMAGE,
    NOT_REGULAR,
    SKIPPED,
    UNREADABLE_FOLDER,
    FileResult,
)
from imgconv.errors import ImgconvError


@dataclass(frozen=True)
class Task:
    """One file to filter: ``source`` into ``destination`` (both absolute)."""

    source: Path
    destination: Path


def find_files(in_dir, out_dir, *, on_error=None) -> list[Path]:
    """Every file under ``in_dir``, recursively and in a stable order, except
    those under ``out_dir`` (which may lie inside ``in_dir``).  Symbolic links
    to files are listed; links to folders are not followed.

    A folder that cannot be listed is passed to ``on_error`` as the ``OSError``
    (its ``filename`` is the folder), and the walk goes on; without
    ``on_error``, that error is raised."""
    in_dir, out_dir = Path(in_dir), Path(out_dir).resolve()
    found = []

    def refused(exc):
        if on_error is None:
            raise exc
        on_error(exc)

    for folder, subfolders, files in os.walk(in_dir, onerror=refused):
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


_FILE_TYPES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)  # anything else that is not a regular file: "a special file"


def not_regular(path) -> str | None:
    """What ``path`` is (``"a FIFO"``, ``"a socket"``, ...) when it is not a regular
    file (links followed); None for a regular file or one that cannot be examined
    (reading it then says why)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _FILE_TYPES if test(mode)), "a special file")


def _folder_refused(exc: OSError) -> FileResult:
    folder = os.fspath(exc.filename) if exc.filename is not None else "?"
    message = f"cannot list the folder '{folder}': {exc.strerror or exc}; the files in it were not filtered"
    return FileResult(folder, None, FAILED, message, reason=UNREADABLE_FOLDER)


# Opening a folder on the way to an output: a folder, never through a symbolic link.
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_BY_DESCRIPTOR = (
    hasattr(os, "O_NOFOLLOW")
    and hasattr(os, "O_DIRECTORY")
    and {os.open, os.mkdir, os.stat, os.chmod, os.rename, os.unlink} <= os.supports_dir_fd
)


@contextlib.contextmanager
def output_folder(destination, out_dir):
    """Open the folder that ``destination`` goes in, creating what is missing, for
    writing ``destination``'s name into it (``dir_fd`` of
    :func:`imgconv.io.write_image`); yields its file descriptor, closed on exit.

    The folders from ``out_dir`` (itself created if missing, and opened as the
    user named it) down are opened one at a time, relative to the one above,
    with ``O_NOFOLLOW``: a folder on the way that is a symbolic link, or that a
    symbolic link replaced since :func:`escapes` looked, is refused, and the
    output is written into the very folder that was checked, whatever happens
    to the names meanwhile.  Folders are created only here, when an output is
    about to be written into them.  Where the platform cannot open relative
    to a folder, the folders are created by path and checked with
    :func:`escapes`, and None is yielded (write by path).

    Raises
    ------
    ImgconvError
        When ``destination`` is not under ``out_dir``, or a folder on the way is
        a symbolic link or not a folder.
    OSError
        When a folder cannot be created or opened (permission, ...).
    """
    destination, root = Path(destination), Path(out_dir)
    try:
        parts = destination.parent.relative_to(root).parts
    except ValueError:
        parts = ("..",)
    if ".." in parts:
        raise ImgconvError(f"'{destination.parent}' leads outside the output folder '{out_dir}'")
    if not _BY_DESCRIPTOR:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if problem := escapes(destination, out_dir):
            raise ImgconvError(problem)
        yield None
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, _FOLDER_FLAGS)
    try:
        where = root
        for part in parts:
            where = where / part
            child = _open_below(fd, part, where, out_dir)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_below(fd, name, shown, out_dir):
    """Open (creating it if missing) the folder ``name`` in the opened folder ``fd``, not following a link."""
    flags = _FOLDER_FLAGS | os.O_NOFOLLOW
    try:
        try:
            return os.open(name, flags, dir_fd=fd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            return os.open(name, flags, dir_fd=fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):  # EMLINK: FreeBSD's ELOOP
            raise
        what = "is a symbolic link" if os.path.islink(shown) else "is not a folder"
        raise ImgconvError(
            f"'{shown}' {what}: outputs are written only into real folders inside the output folder '{out_dir}'"
        ) from None


def plan_batch(
    in_dir, out_dir, *, include=(), exclude=(), extension: str | None = None, overwrite: bool = False
) -> tuple[list[Task], list[FileResult]]:
    """Decide what the batch does with every file under ``in_dir``.

    Returns ``(tasks, results)``: the files to filter, and a :class:`FileResult`
    for each file decided without filtering (skipped: its output exists, it is
    excluded, not an image or not a regular file; or failed because its output
    would overwrite an input, collide with another output or leave ``out_dir``)
    and for each folder that cannot be listed (failed, reason
    ``unreadable-folder``).
    """
    from imgconv import io

    in_dir, out_dir = Path(in_dir).absolute(), Path(out_dir).absolute()
    if not in_dir.is_dir():
        raise ImgconvError(f"input folder '{in_dir}' does not exist or is not a folder")
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise ImgconvError(f"output folder '{out_dir}' is the input folder: the outputs would replace the inputs")
    if out_dir.exists() and not out_dir.is_dir():
        raise ImgconvError(f"output folder '{out_dir}' exists and is not a folder")
    tasks, results = [], []
    sources = find_files(in_dir, out_dir, on_error=lambda exc: results.append(_folder_refused(exc)))
    inputs = {os.path.realpath(p) for p in sources}
    claimed = {}
    for source in sources:
        relative = source.relative_to(in_dir)
        if (include and not matches(relative.as_posix(), include)) or (exclude and matches(relative.as_posix(), exclude)):
            results.append(FileResult(str(source), None, SKIPPED, "left out by --include/--exclude", reason=EXCLUDED))
            continue
        if not io.is_image_path(source):
            results.append(FileResult(str(source), None, SKIPPED, "not an image file", reason=NOT_IMAGE))
            continue
        if kind := not_regular(source):  # reading a FIFO would wait for ever, a device without end
            note = f"'{source}' is {kind}, not a regular file: skipped"
            results.append(FileResult(str(source), None, SKIPPED, note, reason=NOT_REGULAR, warnings=(note,)))
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
