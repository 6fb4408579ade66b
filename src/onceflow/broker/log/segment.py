"""One segment of a partition log: a ``.log`` file of record batches and its sparse index.

The index holds one 16-byte entry (relative offset int32, file position int32, running
max timestamp int64) every ``index_interval`` bytes of log. It is a cache: recovery
rebuilds it from the log whenever it cannot be trusted.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from onceflow.broker.log import disk
from onceflow.broker.log.disk import write_fully
from onceflow.broker.records import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    crc_ok,
    read_header,
)

_INDEX_ENTRY = struct.Struct(">iiq")
_SCAN_CHUNK = 8 * 1024 * 1024
NO_TIMESTAMP = -1


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class Segment:
    """An append-only file of batches starting at ``base_offset``."""

    def __init__(self, directory: Path, base_offset: int, index_interval: int) -> None:
        self.base_offset = base_offset
        self.index_interval = index_interval
        stem = directory / segment_name(base_offset)
        self.log_path = stem.with_suffix(".log")
        self.index_path = stem.with_suffix(".index")
        created = not self.log_path.exists()
        self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        # Without its directory entry on disk, a new segment's fsynced data would still
        # vanish with a power loss: the first fsync syncs the directory too (in the
        # flush round's thread, not on the event loop of the produce that rolled).
        self._entry_unsynced = created
        self.index_fd = os.open(self.index_path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP
        self._index_offsets: list[int] = []
        self._index_positions: list[int] = []
        self._index_max_ts: list[int] = []
        self._bytes_since_index = 0

    # -- appending -------------------------------------------------------------

    def append(self, buffers: list[bytes | memoryview], headers: list[BatchHeader]) -> None:
        """Write already-patched batches (their headers given) at the end of the file."""
        position = self.size
        write_fully(self.fd, buffers, position)
        for header in headers:
            self._note_batch(header, position)
            position += header.size
        self.size = position

    def _note_batch(self, header: BatchHeader, position: int) -> None:
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
        if not self._index_positions or self._bytes_since_index >= self.index_interval:
            self._add_index_entry(header.base_offset, position)
            self._bytes_since_index = 0
        self._bytes_since_index += header.size
        self.next_offset = header.last_offset + 1

    def _add_index_entry(self, offset: int, position: int) -> None:
        entry = _INDEX_ENTRY.pack(offset - self.base_offset, position, self.max_timestamp)
        write_fully(self.index_fd, [entry], len(self._index_offsets) * _INDEX_ENTRY.size)
        self._index_offsets.append(offset)
        self._index_positions.append(position)
        self._index_max_ts.append(self.max_timestamp)

    # -- reading ---------------------------------------------------------------

    def read(self, position: int, size: int) -> bytes:
        return os.pread(self.fd, min(size, self.size - position), position)

    def header_at(self, position: int) -> BatchHeader:
        return read_header(os.pread(self.fd, HEADER_SIZE, position))

    def headers(self, position: int = 0) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of every batch from ``position`` to the end."""
        while position + HEADER_SIZE <= self.size:
            header = self.header_at(position)
            yield position, header
            position += header.size

    def locate(self, offset: int) -> int | None:
        """Position of the batch containing ``offset``, or None when it is past the end."""
        slot = bisect.bisect_right(self._index_offsets, offset) - 1
        position = self._index_positions[slot] if slot >= 0 else 0
        for batch_position, header in self.headers(position):
            if header.last_offset >= offset:
                return batch_position
        return None

    def locate_timestamp(self, timestamp: int) -> BatchHeader | None:
        """Header of the first batch whose max timestamp reaches ``timestamp``."""
        slot = bisect.bisect_left(self._index_max_ts, timestamp) - 1
        position = self._index_positions[slot] if slot >= 0 else 0
        for _, header in self.headers(position):
            if header.max_timestamp >= timestamp:
                return header
        return None

    # -- recovery --------------------------------------------------------------

    def load_index(self) -> bool:
        """Load the index file; False when it is inconsistent with the log."""
        raw = os.pread(self.index_fd, os.fstat(self.index_fd).st_size, 0)
        if len(raw) % _INDEX_ENTRY.size:
            return False
        last_position = -1
        for rel, position, max_ts in _INDEX_ENTRY.iter_unpack(raw):
            if position <= last_position or position + HEADER_SIZE > self.size:
                return False
            self._index_offsets.append(self.base_offset + rel)
            self._index_positions.append(position)
            self._index_max_ts.append(max_ts)
            last_position = position
        if not self._index_positions:
            return self.size == 0
        # Walk from the last entry to find the end offset and the timestamp maximum.
        self.max_timestamp = self._index_max_ts[-1]
        self._bytes_since_index = 0
        for position, header in self.headers(self._index_positions[-1]):
            if position + header.size > self.size:
                return False
            self.max_timestamp = max(self.max_timestamp, header.max_timestamp)
            self.next_offset = header.last_offset + 1
            if position != self._index_positions[-1]:
                self._bytes_since_index += header.size
        return True

    def recover(self, validate_crc: bool) -> int:
        """Rebuild the index by scanning the log; truncate a torn or corrupt tail.

        Returns the number of bytes truncated.
        """
        self._index_offsets.clear()
        self._index_positions.clear()
        self._index_max_ts.clear()
        self.max_timestamp = NO_TIMESTAMP
        self.next_offset = self.base_offset
        self._bytes_since_index = 0
        os.ftruncate(self.index_fd, 0)
        valid_end = 0
        expected_offset = self.base_offset
        while valid_end < self.size:
            chunk = os.pread(self.fd, _SCAN_CHUNK, valid_end)
            pos = 0
            while pos + HEADER_SIZE <= len(chunk):
                header = read_header(chunk, pos)
                if header.length < HEADER_SIZE - LOG_OVERHEAD or header.magic != 2:
                    break
                if pos + header.size > len(chunk):
                    if pos == 0 and valid_end + header.size <= self.size:
                        chunk = os.pread(self.fd, header.size, valid_end)
                    else:
                        break
                if header.base_offset < expected_offset:
                    break
                if validate_crc and not crc_ok(chunk, pos, header):
                    break
                self._note_batch(header, valid_end + pos)
                expected_offset = header.last_offset + 1
                pos += header.size
            if pos == 0:
                break
            valid_end += pos
        truncated = self.size - valid_end
        if truncated:
            os.ftruncate(self.fd, valid_end)
            self.size = valid_end
        return truncated

    # -- lifecycle -------------------------------------------------------------

    def fsync(self) -> None:
        if self._entry_unsynced:
            disk.fsync_directory(self.log_path.parent)
            self._entry_unsynced = False
        disk.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.index_fd)

    def delete(self) -> None:
        self.close()
        self.log_path.unlink(missing_ok=True)
        self.index_path.unlink(missing_ok=True)
