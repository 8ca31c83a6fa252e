"""Reading an MCAP file whose recording was cut off before it was closed.

A recorder that loses power or is killed leaves its ``.mcap`` file without the summary, the
footer and the end magic, and often without ``metadata.yaml``. What it did write is intact: the
header, then whole records (schemas, channels, chunks of messages, their message indexes), and
last the unfinished record it was writing. rosbags refuses such a file ("File end magic is
invalid"); ``CutOffMcapReader`` reads it instead by walking the records from the header, keeping
every complete chunk whose contents decompress and check out, and building the chunk index the
summary would have held, so messages still come in log-time order.

The reader plugs into rosbags' ``Reader`` (``RecoveringReader``), and is used only where the
file has no valid end: a closed file is read by rosbags' own code.
"""

from __future__ import annotations

import logging
import struct
from collections import defaultdict
from typing import NamedTuple

from rosbags.rosbag2 import Reader, ReaderError
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import ChunkInfo, McapReader, Statistics, decompress
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

LOG = logging.getLogger(__name__)

#: MCAP record opcodes (https://mcap.dev/spec) this module looks at.
OP_SCHEMA = 0x03
OP_CHANNEL = 0x04
OP_MESSAGE = 0x05
OP_CHUNK = 0x06
OP_DATA_END = 0x0F
#: Opcode 0 is not a record: a file system that lost power may leave the tail zero-filled.
OP_INVALID = 0x00
#: Each record: opcode (1 byte) and content length (uint64).
RECORD_HEAD = struct.Struct("<BQ")
#: A chunk's fixed head: message start / end time, uncompressed size, uncompressed CRC.
CHUNK_HEAD = struct.Struct("<QQQI")
#: A message record's fixed head: channel id, sequence, log time, publish time.
MESSAGE_HEAD = struct.Struct("<HIQQ")
#: rosbags' errors for a file that ends without the footer and end magic.
NO_END = ("File end magic is invalid.", "Invalid MCAP footer.")


class CutOff(NamedTuple):
    """What a cut-off MCAP file kept and lost."""

    read_bytes: int
    """Bytes from the file's start through its last complete record that could be read."""
    lost_bytes: int
    """Bytes after that: the unfinished record, or a damaged chunk and all that follows it."""
    messages: int
    """Messages in the readable part."""
    reason: str
    """Why the readable part ends there."""

    def describe(self) -> str:
        """One line for logs and reports: what was read and what is lost."""
        return (
            f"cut off before its recording closed it (no MCAP footer): {self.messages} "
            f"messages read from its first {self.read_bytes / 1e6:.1f} MB, up to "
            f"{self.reason}; the {self.lost_bytes / 1e6:.1f} MB after that are lost"
        )


def _chunk_messages(data: bytes) -> tuple[dict[int, int], int, int, bool]:
    """What a decompressed chunk holds.

    Returns:
        Messages per channel, the first and last log time, and whether it defines schemas or
        channels.
    """
    counts: dict[int, int] = defaultdict(int)
    first, last = 2**63 - 1, 0
    defines = False
    pos = 0
    while pos + RECORD_HEAD.size <= len(data):
        op, length = RECORD_HEAD.unpack_from(data, pos)
        pos += RECORD_HEAD.size
        if pos + length > len(data):
            raise ReaderError("a record runs past the end of its chunk")
        defines = defines or op in (OP_SCHEMA, OP_CHANNEL)
        if op == OP_MESSAGE:
            if length < MESSAGE_HEAD.size:
                raise ReaderError(f"a message record of {length} bytes is too short")
            channel, _seq, log_time, _pub = MESSAGE_HEAD.unpack_from(data, pos)
            counts[channel] += 1
            first, last = min(first, log_time), max(last, log_time)
        pos += length
    if pos != len(data):
        raise ReaderError("the chunk ends inside a record")
    return dict(counts), first, last, defines


class CutOffMcapReader(McapReader):
    """rosbags' MCAP reader, which also reads a file that a recording left unfinished.

    ``cut_off`` is None for a file that was closed, else says what was kept and lost.
    """

    def __init__(self, path: object) -> None:
        super().__init__(path)  # type: ignore[arg-type]
        self.cut_off: CutOff | None = None

    def _open(self) -> None:
        try:
            super()._open()
            return
        except ReaderError as exc:
            if str(exc) not in NO_END or not self.data_start:
                raise
        except OSError:  # shorter than a footer: seeking 37 bytes back from the end fails
            if not self.data_start:
                raise
        self._recover()

    def _recover(self) -> None:
        """Index the complete, intact chunks of a file without summary or footer."""
        assert self.bio
        bio = self.bio
        size = bio.seek(0, 2)
        pos = self.data_start
        chunks: list[ChunkInfo] = []
        # Where schemas and channels are defined: top-level records and the chunks holding them.
        definitions: list[tuple[int, int]] = []
        reason = "an unfinished record at its end"
        while True:
            if pos + RECORD_HEAD.size > size:
                if pos == size:
                    reason = "the end of a whole record"
                break
            bio.seek(pos)
            op, length = RECORD_HEAD.unpack(bio.read(RECORD_HEAD.size))
            end = pos + RECORD_HEAD.size + length
            if op == OP_INVALID:
                reason = "zero bytes where the next record should start"
                break
            if end > size:
                break
            if op == OP_DATA_END:
                reason = "its data-end record (its summary is unreadable)"
                break
            if op == OP_CHUNK:
                try:
                    chunk, defines = self._chunk_info(pos, bio.read(length))
                except Exception as exc:  # noqa: BLE001 - any decoder's failure: damaged
                    reason = f"a damaged chunk at byte {pos} ({exc})"
                    break
                chunks.append(chunk)
                if defines:
                    definitions.append((pos, end))
            elif op in (OP_SCHEMA, OP_CHANNEL):
                definitions.append((pos, end))
            pos = end
        self.chunks = [c for c in chunks if c.channel_count]
        # Schemas, channels and connections as rosbags reads them: its scan of the data, over
        # the records that define them only when the messages are in chunks (decompressing
        # each chunk once more would double the time to open).
        data_start = self.data_start
        for start, stop in definitions if self.chunks else [(data_start, pos)]:
            self.data_start, self.data_end = start, stop
            self.meta_scan()
        self.data_start, self.data_end = data_start, pos
        if self.chunks:
            totals: dict[int, int] = defaultdict(int)
            for chunk in self.chunks:
                for channel, count in chunk.channel_count.items():
                    totals[channel] += count
            self.statistics = Statistics(
                sum(totals.values()),
                len(self.schemas),
                len(self.channels),
                0,
                0,
                len(self.chunks),
                min(c.message_start_time for c in self.chunks),
                max(c.message_end_time for c in self.chunks),
                dict(totals),
            )
        assert self.statistics
        stats = self.statistics
        self.connections = [
            c._replace(msgcount=stats.channel_message_counts.get(c.id, 0)) for c in self.connections
        ]
        count = stats.message_count
        self.metadata = self.metadata._replace(
            duration=stats.end_time - stats.start_time + 1 if count else 0,
            start_time=stats.start_time if count else 2**63 - 1,
            end_time=stats.end_time + 1 if count else 0,
            message_count=count,
        )
        self.cut_off = CutOff(pos, size - pos, count, reason)

    @staticmethod
    def _chunk_info(offset: int, record: bytes) -> tuple[ChunkInfo, bool]:
        """The index entry of one chunk record (its content ``record``), checked.

        Returns:
            The entry, and whether the chunk defines schemas or channels.
        """
        _start, _end, uncompressed_size, crc = CHUNK_HEAD.unpack_from(record, 0)
        pos = CHUNK_HEAD.size
        (name_length,) = struct.unpack_from("<I", record, pos)
        compression = record[pos + 4 : pos + 4 + name_length].decode()
        pos += 4 + name_length
        (compressed_size,) = struct.unpack_from("<Q", record, pos)
        pos += 8
        if pos + compressed_size > len(record):
            raise ReaderError("its compressed data runs past the record")
        data = decompress(record[pos : pos + compressed_size], compression, uncompressed_size, crc)
        counts, first, last, defines = _chunk_messages(data)
        info = ChunkInfo(
            message_start_time=first if counts else 0,
            message_end_time=last if counts else 0,
            chunk_start_offset=offset,
            chunk_length=RECORD_HEAD.size + len(record),
            message_index_offsets={},
            message_index_length=0,
            compression=compression,
            compressed_size=compressed_size,
            uncompressed_size=uncompressed_size,
            channel_count=counts,
        )
        return info, defines


class _DirectoryReader(DirectoryReader):
    STORAGE_PLUGINS = {"mcap": CutOffMcapReader, "sqlite3": Sqlite3Reader}


class RecoveringReader(Reader):
    """rosbags' ``Reader`` whose MCAP files may have been cut off (``CutOffMcapReader``)."""

    STORAGE_PLUGINS = {".mcap": CutOffMcapReader, ".db3": Sqlite3Reader, "dir": _DirectoryReader}

    def cut_offs(self) -> list[tuple[str, CutOff]]:
        """(file, what it kept and lost) for each storage file that was cut off."""
        storages = getattr(self.storage, "storages", [self.storage])
        return [
            (str(s.path), s.cut_off)
            for s in storages
            if isinstance(s, CutOffMcapReader) and s.cut_off is not None
        ]

