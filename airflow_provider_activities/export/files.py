"""The downloaded export file: a gzip-aware sink that streams a body to local disk, and the
JSON Lines readers (line by line, or in blocks of whole lines for Arrow's reader).

The sink never holds the body in memory, and checks a gzip stream as it arrives, so a truncated
download is retried before the file is used. The readers inflate a gzip file on the fly: neither
holds more than a line, or a block, of it.

The sink and the readers inflate with ISA-L (the ``isal`` package) when it is installed, two to
three times faster than zlib for the same bytes, and with the standard library's ``zlib`` and
``gzip`` otherwise.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import IO, Any, TypeVar

from airflow_provider_activities._threads import ordered_map, read_ahead
from airflow_provider_activities.api.errors import InvalidResponseError

_gzip: ModuleType = gzip
_zlib: ModuleType = zlib
try:  # ISA-L: the same inflated bytes as gzip and zlib, faster
    from isal import igzip, isal_zlib

    _gzip, _zlib = igzip, isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency; the standard library reads the same files
    pass

GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_ERRORS = (zlib.error, _zlib.error)
"""What a corrupt deflate stream raises (ISA-L's error or zlib's)."""

T = TypeVar("T")


@dataclass(frozen=True)
class ExportFile:
    """A downloaded export file.

    :param path: where it is, on local disk.
    :param compressed: whether it is gzip (found by its magic bytes).
    :param bytes: its size on disk.
    :param content_bytes: the size of the JSON Lines it holds (decompressed); ``None`` for a gzip
        file not inflated while it was downloaded (see :class:`ExportFileSink`'s ``inflate``).
    """

    path: str
    compressed: bool
    bytes: int
    content_bytes: int | None


@dataclass
class ExportFileSink:
    """Receives a download's body, chunk by chunk, into a local file.

    It never holds the body in memory. Gzip is recognised by the first two bytes, whatever the
    headers said (the transport already undid any ``Content-Encoding``); a gzip body is inflated
    on the fly, its output counted then dropped, so a truncated or corrupt stream is caught before
    the file is used: :meth:`result` raises :class:`InvalidResponseError` and the download is
    retried. Concatenated gzip members (and zero padding after them) are accepted, as ``gzip``
    reads them. Each attempt starts with :meth:`begin`, which truncates the file.

    With ``inflate=False`` a gzip body is only written: the caller reads it anyway and checks
    it then (:func:`iter_export_blocks` raises :class:`ExportStreamError`), which spares a whole
    inflate before the file can be used. A plain body's last line is checked either way.

    :param path: the local file to write.
    :param inflate: inflate a gzip body while it arrives, to check it is whole.
    """

    path: str
    inflate: bool = True
    _file: IO[bytes] | None = field(default=None, repr=False)
    _head: bytes = b""
    _compressed: bool | None = None
    _inflater: Any = field(default=None, repr=False)
    _in_member: bool = False
    _padding: bool = False
    _size: int = 0
    _content: int = 0
    _error: str | None = None

    def begin(self) -> None:
        """Start (again) from an empty file."""
        self.close()
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by end()/close()
        self._head, self._compressed, self._inflater = b"", None, None
        self._in_member = self._padding = False
        self._size = self._content = 0
        self._error = None

    def write(self, chunk: bytes) -> None:
        """Append one chunk of the body."""
        if not chunk:
            return
        assert self._file is not None, "begin() first"
        self._file.write(chunk)
        self._size += len(chunk)
        if self._compressed is None:
            self._head += chunk
            if len(self._head) < 2:
                return
            self._compressed = self._head[:2] == GZIP_MAGIC
            chunk, self._head = self._head, b""
        if not self._compressed:
            self._content += len(chunk)
        elif self.inflate:
            self._inflate(chunk)

    def _inflate(self, data: bytes) -> None:
        while data and self._error is None:
            if self._padding:
                if data.strip(b"\0"):
                    self._error = "bytes after the end of the gzip stream are neither a gzip member nor padding"
                return
            if self._inflater is None:
                if not self._in_member and data[0] == 0:  # zero padding after the last member
                    self._padding = True
                    continue
                if data[:2] != GZIP_MAGIC[: len(data)]:  # (ISA-L would wait for a whole header to say so)
                    self._error = "corrupt gzip stream: bytes after a gzip member are not another member"
                    return
                self._inflater = _zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._in_member = True
            inflater = self._inflater
            try:
                self._content += len(inflater.decompress(data, 1 << 20))
                while inflater.unconsumed_tail and not inflater.eof:
                    self._content += len(inflater.decompress(inflater.unconsumed_tail, 1 << 20))
            except _INFLATE_ERRORS as err:
                self._error = f"corrupt gzip stream: {err}"
                return
            if not inflater.eof:
                return
            self._in_member = False
            self._inflater = None
            data = inflater.unused_data

    def end(self) -> None:
        """Close the file after the last chunk."""
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def result(self, _body: bytes = b"") -> ExportFile:
        """What was received; raises :class:`InvalidResponseError` for a truncated or corrupt gzip body."""
        self.close()
        if self._error is not None:
            raise InvalidResponseError(f"export file: {self._error} (after {self._size} bytes)")
        if self._compressed is None:  # 0 or 1 byte
            if self._head == GZIP_MAGIC[:1]:
                raise InvalidResponseError("export file: gzip stream cut short after 1 byte")
            self._compressed, self._content = False, self._size
        if self._compressed and self._in_member:
            raise InvalidResponseError(f"export file: gzip stream cut short after {self._size} bytes")
        if not self._compressed and not _last_line_complete(self.path):
            raise InvalidResponseError(
                f"export file: its last line is not a whole JSON object (cut short after {self._size} bytes?)"
            )
        inflated = not self._compressed or self.inflate
        return ExportFile(
            path=self.path, compressed=self._compressed, bytes=self._size, content_bytes=self._content if inflated else None
        )


_TAIL_BYTES = 1 << 20


def _last_line_complete(path: str) -> bool:
    """Whether the last non-blank line of a plain JSON Lines file parses (a body cut short in the
    middle of a record does not); a last line longer than 1 MiB is not checked.
    """
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - _TAIL_BYTES))
        tail = file.read().rstrip()
    if not tail:
        return True
    newline = tail.rfind(b"\n")
    if newline < 0 and size > _TAIL_BYTES:
        return True
    try:
        json.loads(tail[newline + 1 :])
    except ValueError:
        return False
    return True


class ExportStreamError(InvalidResponseError):
    """A downloaded export file's gzip stream is corrupt or cut short (found while reading it).

    Raised by :func:`iter_export_blocks` for a file downloaded without the check while it arrived
    (``ExportFileSink(inflate=False)``): downloading it again may help, as for a download that
    fails its check.
    """


class ExportFileError(ValueError):
    """A line of a downloaded export file is not a JSON object.

    :param path: the file.
    :param line: the 1-based line number.
    :param reason: what is wrong with it.
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"Line {line} of the export file {os.path.basename(path)} is not a JSON object: {reason}")


def open_export_file(path: str) -> IO[bytes]:
    """A binary stream of the JSON Lines in ``path``, inflated on the fly when it is gzip."""
    with open(path, "rb") as probe:
        head = probe.read(2)
    if head == GZIP_MAGIC:
        return _gzip.open(path, "rb")
    return open(path, "rb")


def iter_export_lines(path: str) -> Iterator[dict[str, Any]]:
    """Each record of an export file, in file order, one line at a time (blank lines skipped).

    :raises ExportFileError: for a line that is not a JSON object.
    """
    with open_export_file(path) as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise ExportFileError(path, number, str(err)) from None
            if not isinstance(record, dict):
                raise ExportFileError(path, number, f"a JSON {type(record).__name__}")
            yield record


def iter_export_batches(path: str, size: int = 2000) -> Iterator[list[dict[str, Any]]]:
    """The records of an export file in lists of at most ``size``, in file order."""
    batch: list[dict[str, Any]] = []
    for record in iter_export_lines(path):
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch



DEFAULT_BLOCK_BYTES = 4 * 1024 * 1024
"""Bytes of JSON Lines per block :func:`iter_export_blocks` hands out (more for a longer line)."""


@dataclass(frozen=True)
class ExportBlock:
    """Whole lines of an export file.

    :param data: the lines' bytes, newlines included; the last line may lack its newline only at
        the end of the file.
    :param first_line: the 1-based number, in the file, of the block's first line.
    """

    data: bytes
    first_line: int


def iter_export_blocks(
    path: str, block_bytes: int = DEFAULT_BLOCK_BYTES, prepare: Callable[[ExportBlock], T] | None = None, workers: int = 1
) -> Iterator[ExportBlock] | Iterator[T]:
    """The lines of an export file in blocks of about ``block_bytes``, each cut after a newline.

    The file is read and inflated (when it is gzip) by a thread of its own, one block ahead, so
    inflating overlaps with what the consumer does with the block before (ISA-L and zlib release
    the GIL). Memory holds two blocks and the one being read, plus those being prepared.

    :param path: the downloaded file (gzip or plain JSON Lines).
    :param block_bytes: bytes read at a time; a line longer than that makes its block longer.
    :param prepare: applied to each block (what it returns is handed out instead of the block),
        by ``workers`` threads of their own, in order: work that releases the GIL, such as
        Arrow's parse, then runs on several cores and overlaps with the consumer's work on the
        block before.
    :param workers: threads preparing blocks at once (with ``prepare``).
    """
    blocks = read_ahead(_read_blocks(path, block_bytes), depth=1, name="peopleai-export-reader")
    if prepare is None:
        return blocks
    return ordered_map(prepare, blocks, workers, name="peopleai-export-convert")


def gzip_stream_problem(path: str) -> str | None:
    """Why the gzip stream of a downloaded file is not whole (corrupt or cut short), or ``None``
    (also for a plain file). It reads the whole file: for a file whose conversion failed, to
    tell a corrupt download (a garbled line comes before the checksum that proves it) from bad data.
    """
    try:
        for _ in _read_blocks(path, DEFAULT_BLOCK_BYTES):
            pass
    except ExportStreamError as err:
        return str(err)
    return None


def _read_blocks(path: str, block_bytes: int) -> Iterator[ExportBlock]:
    line = 1
    rest = b""
    with open_export_file(path) as stream:
        while True:
            try:
                chunk = stream.read(block_bytes)
            except (EOFError, gzip.BadGzipFile, *_INFLATE_ERRORS) as err:  # (isal's BadGzipFile is gzip's)
                raise ExportStreamError(f"export file {os.path.basename(path)}: corrupt gzip stream: {err}") from None
            if not chunk:
                if rest:
                    yield ExportBlock(rest, line)
                return
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no newline yet: a line longer than a block
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield ExportBlock(block, line)
            line += block.count(b"\n")
