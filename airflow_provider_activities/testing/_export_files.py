"""The sandbox's export files: each distinct file built once, on disk, then served from there.

A file is named by its :class:`FileSpec`: the job's days and types, the knobs that shape its bytes,
and the version of the data (live inserts make a new version). Two jobs with the same spec share
one file, so a benchmark's warm-up job builds the file its measured jobs download. A build runs
in its own thread and streams records to a temporary file (memory stays flat whatever the
file's size); answers send that file with ``sendfile``, so serving costs next to nothing.

Disk stays bounded by what is in use: a file is deleted once no live job holds it and it is not
among the :attr:`ExportFiles.keep` most recently built; the directory goes with the service
(or at exit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, BinaryIO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSpec:
    """Everything that decides a file's bytes.

    :param export_type: ``snapshot`` or ``delta``.
    :param activity_type: ``all``, ``email``, ``meeting`` or ``call``.
    :param start_date: the job's first day.
    :param end_date: the job's last day (inclusive).
    :param gzip: the file is gzip-compressed JSON Lines.
    :param timestamp_format: how times are written (``iso``, ``mixed`` or ``epoch_ms``).
    :param stale_duplicates: earlier versions of reprocessed activities are written too.
    :param spill_days: records of this many days around the job's days are written too.
    :param unknown_fields: records carry the ``account`` object the schema does not list.
    :param data_version: the version of the data (it changes with every live insert).
    """

    export_type: str
    activity_type: str
    start_date: date
    end_date: date
    gzip: bool
    timestamp_format: str
    stale_duplicates: bool
    spill_days: int
    unknown_fields: bool
    data_version: int


@dataclass
class ExportFile:
    """A built file.

    :param spec: what it holds.
    :param path: where it is on disk.
    :param size: its size in bytes.
    :param records: how many records (lines) it holds.
    :param seconds: how long its build took.
    """

    spec: FileSpec
    path: str
    size: int
    records: int
    seconds: float

    def read(self) -> bytes:
        """The file's bytes (for inspection in tests; answers send the file itself)."""
        with open(self.path, "rb") as file:
            return file.read()


class Build:
    """A file being built (or built): wait for it with :meth:`wait`.

    :param spec: what the file holds.
    """

    def __init__(self, spec: FileSpec) -> None:
        self.spec = spec
        self.holders = 0
        """How many live jobs serve this file (it stays on disk while any does)."""
        self._done = threading.Event()
        self._file: ExportFile | None = None
        self._error: BaseException | None = None

    def finish(self, file: ExportFile | None, error: BaseException | None = None) -> None:
        """Record the outcome and wake the waiters.

        :param file: the built file, or ``None`` when the build failed.
        :param error: why it failed.
        """
        self._file, self._error = file, error
        self._done.set()

    @property
    def done(self) -> bool:
        """Whether the build has ended (well or not)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> ExportFile | None:
        """The file, once built; ``None`` if ``timeout`` seconds pass first.

        :param timeout: seconds to wait at most; ``None`` waits as long as the build takes.
        :raises RuntimeError: the build failed (its error chained).
        """
        if not self._done.wait(timeout):
            return None
        if self._error is not None:
            raise RuntimeError(f"building the export file failed: {self._error!r}") from self._error
        return self._file


Writer = Callable[[FileSpec, BinaryIO], int]
"""Writes a spec's file to a binary stream; returns how many records it wrote."""


class ExportFiles:
    """Builds each distinct file once, in the background, and keeps it on disk while it is used.

    :param write: writes a spec's file to a binary stream and returns its record count.
    :param keep: how many files no live job holds stay on disk for later jobs of the same spec.
    """

    def __init__(self, write: Writer, keep: int = 4) -> None:
        self.keep = keep
        """How many files no job holds stay on disk (the most recently built)."""
        self._write = write
        self._lock = threading.Lock()
        self._builds: OrderedDict[FileSpec, Build] = OrderedDict()
        self._directory: str | None = None  # made at the first build
        self._counter = 0
        self._stats: dict[str, Any] = {
            "files_built": 0,
            "records_written": 0,
            "bytes_written": 0,
            "build_seconds": 0.0,
            "reused": 0,
            "last_build": None,
        }

    def request(self, spec: FileSpec) -> Build:
        """The build of ``spec``, held for a job until :meth:`release`: the one already made or
        under way, else a new one, started now in a daemon thread.

        :param spec: what the file holds.
        """
        with self._lock:
            found = self._builds.get(spec)
            if found is not None:
                self._builds.move_to_end(spec)
                self._stats["reused"] += 1
                found.holders += 1
                return found
            build = self._builds[spec] = Build(spec)
            build.holders += 1
            self._counter += 1
            if self._directory is None:
                self._directory = tempfile.mkdtemp(prefix="peopleai-sandbox-export-")
                weakref.finalize(self, shutil.rmtree, self._directory, ignore_errors=True)
            path = os.path.join(self._directory, f"{self._counter:06d}.jsonl{'.gz' if spec.gzip else ''}")
        threading.Thread(target=self._run, args=(build, path), name="peopleai-sandbox-export-build", daemon=True).start()
        return build

    def _run(self, build: Build, path: str) -> None:
        started = time.perf_counter()
        try:
            with open(path, "wb") as out:
                records = self._write(build.spec, out)
        except BaseException as error:
            with self._lock:
                self._builds.pop(build.spec, None)
            build.finish(None, error)
            log.exception("building an export file failed")
            return
        seconds = time.perf_counter() - started
        file = ExportFile(build.spec, path, os.path.getsize(path), records, seconds)
        last = {
            "records": records,
            "bytes": file.size,
            "seconds": round(seconds, 6),
            "records_per_second": round(records / seconds) if seconds > 0 else None,
            "bytes_per_second": round(file.size / seconds) if seconds > 0 else None,
        }
        with self._lock:
            stats = self._stats
            stats["files_built"] += 1
            stats["records_written"] += records
            stats["bytes_written"] += file.size
            stats["build_seconds"] += seconds
            stats["last_build"] = last
        log.info(
            "export file built: %d records, %d bytes in %.2f s (%s records/s)",
            records,
            file.size,
            seconds,
            last["records_per_second"],
        )
        build.finish(file)
        self._trim()

    def release(self, build: Build) -> None:
        """A job no longer serves the file of ``build`` (it expired).

        :param build: the build a job held.
        """
        with self._lock:
            build.holders -= 1
        self._trim()

    def _trim(self) -> None:
        """Delete the files no job holds beyond the :attr:`keep` most recent."""
        doomed = []
        with self._lock:
            idle = [build for build in self._builds.values() if build.done and build.holders == 0]
            for build in idle[: max(0, len(idle) - self.keep)]:
                del self._builds[build.spec]
                file = build.wait(0)
                if file is not None:
                    doomed.append(file.path)
        for path in doomed:
            with contextlib.suppress(OSError):  # already gone
                os.unlink(path)

    def stats(self) -> dict[str, Any]:
        """Counters: ``files_built``, ``records_written``, ``bytes_written``, ``build_seconds``,
        ``reused`` (jobs that found their file built or under way), ``files_on_disk``,
        ``bytes_on_disk``, and ``last_build`` (``records``, ``bytes``, ``seconds``,
        ``records_per_second``, ``bytes_per_second`` of the latest build, or ``None``).
        """
        with self._lock:
            stats = dict(self._stats)
            files = [build.wait(0) for build in self._builds.values() if build.done]
        on_disk = [file for file in files if file is not None]
        stats["build_seconds"] = round(stats["build_seconds"], 6)
        stats["files_on_disk"] = len(on_disk)
        stats["bytes_on_disk"] = sum(file.size for file in on_disk)
        return stats


__all__ = ["Build", "ExportFile", "ExportFiles", "FileSpec"]
