"""The batch report: what happened to each file, counted, and written as JSON.

A :class:`FileResult` per file (done, skipped, failed or interrupted, with
the warnings the output could not keep); a :class:`Report` counts them, names
every failure and derives the exit code (after black's ``Report``).

Names that are not UTF-8
------------------------
Python reads a file name's bytes that are not valid UTF-8 as lone surrogates
(``surrogateescape``: the byte 0xE9 becomes U+DCE9).  The JSON report writes
each as the escape ``\\udcXX`` (so the file is valid UTF-8, and
``os.fsencode(json.load(f)["files"][0]["source"])`` gives back the exact bytes),
and an entry whose ``source`` or ``destination`` is such a name also has
``source_bytes`` / ``destination_bytes``: the name's bytes in base64, for
readers outside Python (``base64 -d``).
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field

from imgconv.errors import ImgconvError

# FileResult.status values
DONE = "done"
SKIPPED = "skipped"
FAILED = "failed"
INTERRUPTED = "interrupted"

# FileResult.reason values for skipped files
EXISTS = "exists"  # the output is already there (and --overwrite was not given)
NOT_IMAGE = "not-image"  # not an image file, by its extension
EXCLUDED = "excluded"  # left out by the include/exclude patterns
NOT_REGULAR = "not-regular"  # a FIFO, socket or device (counted with the files that are not images)
# ... for failures
UNREADABLE_FOLDER = "unreadable-folder"  # a folder that could not be listed: its files were not seen
TIMEOUT = "timeout"  # the file took longer than the batch's time limit
# ... and for interrupted files
NOT_STARTED = "not-started"  # still waiting when the batch was stopped
ABANDONED = "abandoned"  # in progress when a second Ctrl-C came


@dataclass
class FileResult:
    """What happened to one file.

    ``status`` is ``"done"``, ``"skipped"`` (``reason``: ``"exists"``,
    ``"not-image"``, ``"not-regular"`` or ``"excluded"``), ``"failed"``
    (``message`` says why; ``reason`` is ``"timeout"`` for a file over the time
    limit, ``"unreadable-folder"`` for a folder that could not be listed, whose
    ``source`` is the folder) or ``"interrupted"`` (``reason``: ``"not-started"``
    or ``"abandoned"``).  ``warnings`` are what the output could not keep (see
    :mod:`imgconv.io`), or why a file was skipped where that is unusual.
    """

    source: str
    destination: str | None
    status: str
    message: str = ""
    seconds: float = 0.0
    reason: str = ""
    warnings: tuple = ()
    megapixels: float = 0.0

    def record(self):
        """The result as a JSON-ready dict (with ``source_bytes`` / ``destination_bytes``
        for names that are not UTF-8: see the module's docstring)."""
        record = {
            "source": self.source,
            "destination": self.destination,
            "status": self.status,
            "reason": self.reason or None,
            "error": self.message if self.status == FAILED else None,
            "seconds": round(self.seconds, 4),
            "megapixels": round(self.megapixels, 3),
            "warnings": list(self.warnings),
        }
        for key in ("source", "destination"):
            raw = _raw_name(record[key])
            if raw is not None:
                record[f"{key}_bytes"] = raw
        return record


# Lone surrogates: what Python makes of the bytes of a name that are not UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _raw_name(name):
    """The bytes of a file name that is not valid UTF-8, in base64; None for any other name."""
    if name is None or not _SURROGATE.search(name):
        return None
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate that no file name decodes to
        return None
    return base64.b64encode(raw).decode("ascii")


def _escape_surrogates(text: str) -> str:
    """JSON text with each lone surrogate written as its ``\\uXXXX`` escape, which
    JSON readers decode back to it (UTF-8 cannot encode it as a character)."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass
class Report:
    """Counts of what a batch did; the exit code follows from it."""

    results: list = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    workers: str = ""
    started: str = ""
    settings: dict = field(default_factory=dict)

    def add(self, result):
        self.results.append(result)

    def _count(self, status, reason=None):
        return sum(1 for r in self.results if r.status == status and (reason is None or r.reason == reason))

    @property
    def done(self):
        return self._count(DONE)

    @property
    def skipped(self):
        """Every skipped file: outputs that exist, files that are not images, excluded files."""
        return self._count(SKIPPED)

    @property
    def skipped_existing(self):
        return self._count(SKIPPED, EXISTS)

    @property
    def skipped_not_images(self):
        """Files that are not images: by their extension (``not-image``), or not
        regular files at all (``not-regular``: FIFOs, sockets, devices)."""
        return self._count(SKIPPED, NOT_IMAGE) + self._count(SKIPPED, NOT_REGULAR)

    @property
    def excluded(self):
        return self._count(SKIPPED, EXCLUDED)

    @property
    def matched(self):
        """Results other than files left out by the include/exclude patterns."""
        return sum(1 for r in self.results if r.reason != EXCLUDED)

    @property
    def failed(self):
        return self._count(FAILED)

    @property
    def unfinished(self):
        """Files not finished because the batch was interrupted."""
        return self._count(INTERRUPTED)

    @property
    def failures(self):
        return [r for r in self.results if r.status == FAILED]

    @property
    def images_per_second(self):
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def megapixels(self):
        """Megapixels filtered (of the files done)."""
        return sum(r.megapixels for r in self.results if r.status == DONE)

    @property
    def megapixels_per_second(self):
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self):
        """130 when interrupted (as a shell reports SIGINT), 1 when any file failed, else 0."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def summary(self):
        parts = [f"{self.done} done"]
        if self.skipped_existing:
            parts.append(f"{self.skipped_existing} skipped (output exists)")
        if self.skipped_not_images:
            parts.append(f"{self.skipped_not_images} skipped (not images)")
        if self.excluded:
            parts.append(f"{self.excluded} excluded")
        parts.append(f"{self.failed} failed")
        if self.unfinished:
            parts.append(f"{self.unfinished} not finished")
        rates = f"{self.images_per_second:.2f} images/s, {self.megapixels_per_second:.2f} MP/s"
        text = ", ".join(parts) + f" in {self.seconds:.1f} s ({rates})"
        return ("interrupted: " + text) if self.interrupted else text

    def as_dict(self):
        """The whole report, every file included, as JSON-ready data (``--report``)."""
        from imgconv import __version__

        return {
            "imgconv": __version__,
            **self.settings,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "counts": {
                "done": self.done,
                "skipped_existing": self.skipped_existing,
                "skipped_not_image": self.skipped_not_images,
                "excluded": self.excluded,
                "failed": self.failed,
                "interrupted": self.unfinished,
            },
            "images_per_second": round(self.images_per_second, 3),
            "megapixels": round(self.megapixels, 3),
            "megapixels_per_second": round(self.megapixels_per_second, 3),
            "files": [r.record() for r in sorted(self.results, key=lambda r: r.source)],
        }

    def write_json(self, path) -> None:
        """Write :meth:`as_dict` to ``path`` as JSON, atomically (see :func:`imgconv.io.write_atomically`),
        in UTF-8, names that are not UTF-8 escaped (see the module's docstring)."""
        from imgconv import io

        text = _escape_surrogates(json.dumps(self.as_dict(), indent=1, ensure_ascii=False, default=str)) + "\n"
        try:
            io.write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))
        except OSError as exc:
            raise ImgconvError(f"cannot write the report '{path}': {exc.strerror or exc}") from exc


def interrupted(task, reason: str) -> FileResult:
    """The result of a task (a :class:`~imgconv.batch.tasks.Task`) that the
    batch's interruption left unfinished: ``reason`` is NOT_STARTED or ABANDONED."""
    what = "not started" if reason == NOT_STARTED else "abandoned in progress"
    return FileResult(str(task.source), str(task.destination), INTERRUPTED, f"{what}: the batch was interrupted", reason=reason)
