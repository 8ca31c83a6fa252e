"""Reading a recording that its recorder never closed.

A recorder that loses power or is killed leaves no ``metadata.yaml`` (``ros2 bag record``
writes it on closing), and its last ``.mcap`` file without the summary, the footer and the end
magic. What it did write is intact: the header, then whole records (schemas, channels, chunks of
messages, their message indexes), and last the unfinished record it was writing.

- ``CutOffMcapReader``: rosbags refuses such a file ("File end magic is invalid"); this reads
  it by walking the records from the header and building the chunk index the summary would
  have held (from the message index records after each chunk; a chunk without them is
  decompressed and counted), so messages still come in log-time order. A closed file is read
  by rosbags' own code. In both, a chunk that fails its CRC or does not decompress when read
  is skipped and reported (``DamagedChunk``), and the other chunks are read; a file without
  chunks (``fastwrite``) is read in log-time order even where its records are not.
- A folder without ``metadata.yaml`` that holds several storage files (a split recording,
  ``--max-bag-size`` or ``--max-bag-duration``) reads as one bag, its files in the order of
  their first message, as ``ros2 bag reindex`` would have described them; a file of them that
  does not open is left out and named.
- ``RescuingSqlite3Reader`` (``sqlite_rescue``): a ``.db3`` whose write-ahead log
  (``FILE-wal``, the ``resilient`` preset) still holds messages is read from a copy merged
  with its log, and one sqlite finds damaged from a copy rebuilt of the rows that read.

All plug into rosbags' ``Reader`` (``RecoveringReader``). They build on internals of rosbags
0.11.9's ``McapReader`` (``meta_scan``, ``data_start``/``data_end``, its chunk index),
``Sqlite3Reader`` (``path``, opened immutable) and
``DirectoryReader``, which change between releases: the requirements pin that version, and the
tests in ``tests/data/test_rosbag.py`` fail on a version where this no longer holds.
"""

from __future__ import annotations

import heapq
import logging
import re
import shutil
import struct
import sys
from collections import defaultdict
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, NamedTuple

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # rosbags installs the backport before 3.14
    from backports import zstd

from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.rosbag2.metadata import ReaderMetadata
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import (
    ChunkInfo,
    McapReader,
    Msg,
    Statistics,
    decompress,
    msgsrc,
)

from .sqlite_rescue import Rebuilt, RescuingSqlite3Reader, WalLog, check_room

LOG = logging.getLogger(__name__)

#: MCAP record opcodes (https://mcap.dev/spec) this module looks at.
OP_SCHEMA = 0x03
OP_CHANNEL = 0x04
OP_MESSAGE = 0x05
OP_CHUNK = 0x06
OP_MESSAGE_INDEX = 0x07
OP_DATA_END = 0x0F
#: Opcode 0 is not a record: a file system that lost power may leave the tail zero-filled.
OP_INVALID = 0x00
#: Each record: opcode (1 byte) and content length (uint64).
RECORD_HEAD = struct.Struct("<BQ")
#: A chunk's fixed head: message start / end time, uncompressed size, uncompressed CRC.
CHUNK_HEAD = struct.Struct("<QQQI")
#: A message record's fixed head: channel id, sequence, log time, publish time.
MESSAGE_HEAD = struct.Struct("<HIQQ")
#: Bytes read of an indexed chunk to know its head: the fixed part, its compression's name.
CHUNK_HEAD_READ = 4096
#: A message index record's fixed head: channel id, length of its (log time, offset) pairs.
MESSAGE_INDEX_HEAD = struct.Struct("<HI")
#: rosbags' errors for a file that ends without the footer and end magic.
NO_END = ("File end magic is invalid.", "Invalid MCAP footer.")


class CutOff(NamedTuple):
    """What a cut-off MCAP file kept and lost."""

    read_bytes: int
    """Bytes from the file's start through its last complete record that could be read."""
    lost_bytes: int
    """Bytes after that: the unfinished record, or an unindexed damaged chunk and all after."""
    messages: int
    """Messages in the readable part."""
    reason: str
    """Why the readable part ends there."""
    skipped: tuple[tuple[int, int, str], ...] = ()
    """(start, end, why) of each damaged chunk without message indexes passed by in it: how
    many messages it held is not known."""
    undefined: int = 0
    """Messages of the readable part on channels that only a skipped chunk defined."""

    def describe(self) -> str:
        """One line for logs and reports: what was read and what is lost."""
        skipped = "".join(
            f"; a damaged chunk without message indexes at byte {start} ({why}) was passed "
            f"by, its {_size(end - start)} of messages lost" for start, end, why in self.skipped)
        if self.undefined:
            skipped += (f", and {self.undefined} messages on channels only it defined cannot "
                        "be read")
        return (
            f"cut off before its recording closed it (no MCAP footer): {self.messages} "
            f"messages read from its first {_size(self.read_bytes)}, up to {self.reason}; the "
            f"{_size(self.lost_bytes)} after that are lost{skipped}"
        )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes / 1e3:.1f} kB"


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


class DamagedChunk(NamedTuple):
    """A chunk that did not decompress or failed its CRC while its messages were read."""

    file: str
    offset: int
    """Byte offset of the chunk record in the file."""
    lost: dict[str, int]
    """Messages of the topics read that the chunk held, per topic (some may lie outside the
    time range read)."""
    reason: str


class CutOffMcapReader(McapReader):
    """rosbags' MCAP reader, which also reads an unfinished file, and past a damaged chunk.

    ``cut_off`` is None for a file that was closed, else says what was kept and lost. A chunk
    that fails while messages are read (its CRC, its compression) is skipped: its messages are
    lost, the other chunks' are read, and ``on_damaged`` (when set) is told.
    """

    def __init__(self, path: object) -> None:
        super().__init__(path)  # type: ignore[arg-type]
        self.cut_off: CutOff | None = None
        self.on_damaged: Callable[[DamagedChunk], None] | None = None

    def messages(
        self,
        connections: Collection[Connection],
        start: int | None = None,
        stop: int | None = None,
    ) -> Generator[tuple[Connection, int, bytes], None, None]:
        """As rosbags' (the indexed path), each chunk read on its own (``DamagedChunk``).

        A file without chunks (rosbag2's ``fastwrite`` preset) is read in log-time order too
        (``_unchunked``): rosbags refuses one whose records are out of that order, as a
        recorder writes them when two topics' callbacks run in another order than their
        messages arrived.
        """
        if not self.chunks:
            heads = self._unchunked(connections, start, stop)
            if heads is None:  # chunks without an index: rosbags' scan
                yield from super().messages(connections, start, stop)
                return
            assert self.bio
            channel_map = {conn.id: conn for conn in connections}
            for log_time, _order, offset, size, channel in heads:
                self.bio.seek(offset)
                yield channel_map[channel], log_time, self.bio.read(size)
            return
        assert self.bio
        channel_map = {conn.id: conn for conn in connections}
        sources = [
            self._guarded(chunk, msgsrc(
                chunk,
                channel_map,
                chunk.message_start_time if start is None else start,
                chunk.message_end_time + 1 if stop is None else stop,
                self.bio,
            ), channel_map)
            for chunk in self.chunks
            if (start is None or start < chunk.message_end_time + 1)
            and (stop is None or chunk.message_start_time < stop)
            and any(chunk.channel_count.get(cid, 0) for cid in channel_map)
        ]
        for timestamp, offset, connection, data in heapq.merge(*sources):
            if offset and connection is not None and data is not None:
                yield connection, timestamp, data

    def _unchunked(
        self, connections: Collection[Connection], start: int | None, stop: int | None,
    ) -> list[tuple[int, int, int, int, int]] | None:
        """Where the wanted messages of a file without chunks are, sorted by log time.

        Returns (log time, file order, data offset, data size, channel id) per message, from
        one walk over the records' heads (the data is read when yielded); None when the file
        holds chunk records after all (an unindexed chunked file).
        """
        assert self.bio
        bio = self.bio
        wanted = {conn.id for conn in connections}
        lo = 0 if start is None else start
        hi = 2**64 if stop is None else stop
        heads: list[tuple[int, int, int, int, int]] = []
        pos, end = self.data_start, self.data_end
        while pos + RECORD_HEAD.size <= end:
            bio.seek(pos)
            op, length = RECORD_HEAD.unpack(bio.read(RECORD_HEAD.size))
            body = pos + RECORD_HEAD.size
            if op in (OP_INVALID, OP_DATA_END) or body + length > end:
                break
            if op == OP_CHUNK:
                return None
            if op == OP_MESSAGE:
                if length < MESSAGE_HEAD.size:
                    raise ReaderError(f"Invalid message record length {length}.")
                channel, _seq, log_time, _pub = MESSAGE_HEAD.unpack(bio.read(MESSAGE_HEAD.size))
                if channel in wanted and lo <= log_time < hi:
                    heads.append((log_time, len(heads), body + MESSAGE_HEAD.size,
                                  length - MESSAGE_HEAD.size, channel))
            pos = body + length
        heads.sort()
        return heads

    def _guarded(
        self, chunk: ChunkInfo, source: Iterator[Msg], channel_map: dict[int, Connection]
    ) -> Generator[Msg, None, None]:
        try:
            yield from source
        except Exception as exc:  # noqa: BLE001 - rosbags, zstd, lz4: the chunk is unreadable
            lost: dict[str, int] = defaultdict(int)
            for cid, count in chunk.channel_count.items():
                if cid in channel_map:
                    lost[channel_map[cid].topic] += count
            damage = DamagedChunk(str(self.path), chunk.chunk_start_offset, dict(lost),
                                  str(exc).rstrip("."))
            if self.on_damaged is not None:
                self.on_damaged(damage)

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
        """Index the complete, intact chunks of a file without summary or footer.

        A chunk followed by its message index records is indexed from them, without
        decompressing it (a chunk damaged inside is found, skipped and counted when read, as
        in a closed file); one without (the last before the cut, or a writer that writes none)
        is decompressed to count its messages. If it does not decode, it ends what is read when
        it is the last chunk, and is passed by otherwise (``CutOff.skipped``): the records after
        it, which its length led to, are whole.
        """
        assert self.bio
        bio = self.bio
        size = bio.seek(0, 2)
        pos = self.data_start
        # File order: ("definition", start, end) for top-level schema and channel records,
        # ("chunk", start, end) for chunks; and what each chunk's message indexes say.
        records: list[tuple[str, int, int]] = []
        indexes: dict[int, _Index] = {}
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
                records.append(("chunk", pos, end))
            elif op == OP_MESSAGE_INDEX and records and records[-1][0] == "chunk":
                index = indexes.setdefault(records[-1][1], _Index())
                if not index.add(bio.read(length)):
                    indexes.pop(records[-1][1])  # not an index after all: count by decoding
            elif op in (OP_SCHEMA, OP_CHANNEL):
                records.append(("definition", pos, end))
            pos = end
        # The cut may fall among the last chunk's message indexes: count that one by decoding.
        chunk_starts = [start for kind, start, _ in records if kind == "chunk"]
        if chunk_starts:
            indexes.pop(chunk_starts[-1], None)
        chunks: list[ChunkInfo] = []
        scan: list[tuple[int, int, bool]] = []  # (start, end, is a chunk) to scan for definitions
        skipped: list[tuple[int, int, str]] = []
        for kind, start, stop in records:
            if kind == "definition":
                scan.append((start, stop, False))
                continue
            chunk_index = indexes.get(start)
            length = stop - start - RECORD_HEAD.size
            bio.seek(start + RECORD_HEAD.size)
            record = bio.read(length if chunk_index is None else min(length, CHUNK_HEAD_READ))
            try:
                chunk, defines = self._chunk_info(start, record, length, chunk_index)
            except Exception as exc:  # noqa: BLE001 - any decoder's failure: damaged
                if chunk_index is None and start != chunk_starts[-1]:
                    # Its record's length led to whole records after it: pass it by.
                    skipped.append((start, stop, str(exc).rstrip(".")))
                    continue
                reason = f"a damaged chunk at byte {start} ({exc})"
                pos = start
                break
            chunks.append(chunk)
            if defines is not False:  # True, or None: not decompressed, it may define some
                scan.append((start, stop, defines is None))
        self.chunks = [c for c in chunks if c.channel_count]
        # Schemas, channels and connections as rosbags reads them: its scan of the data, over
        # the records that define them when the messages are in chunks, and of an indexed chunk
        # only when it holds messages of a channel not yet defined (decompressing every chunk
        # to find the few that define would multiply the time to open).
        data_start = self.data_start
        if not self.chunks:
            scan = [(data_start, pos, False)]
        for start, stop, indexed in scan:
            if stop > pos:  # after a damaged chunk that ended what is read
                continue
            if indexed:
                chunk = next(c for c in chunks if c.chunk_start_offset == start)
                if set(chunk.channel_count) <= set(self.channels):
                    continue
            self.data_start, self.data_end = start, stop
            try:
                self.meta_scan()
            except Exception:  # noqa: BLE001 - a damaged indexed chunk: found when read
                if not indexed:
                    raise
        self.data_start, self.data_end = data_start, pos
        undefined = 0
        if self.chunks:
            totals: dict[int, int] = defaultdict(int)
            for chunk in self.chunks:
                for channel, count in chunk.channel_count.items():
                    if channel in self.channels:
                        totals[channel] += count
                    else:  # defined in a chunk passed by
                        undefined += count
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
        self.cut_off = CutOff(pos, size - pos, count, reason, tuple(skipped), undefined)

    @staticmethod
    def _chunk_info(
        offset: int, record: bytes, length: int, index: _Index | None
    ) -> tuple[ChunkInfo, bool | None]:
        """The index entry of one chunk record (``length`` bytes of content, from ``record``).

        From ``index`` (its message index records) when given, ``record`` holding at least the
        chunk's head; else from its messages, decompressed and checked, ``record`` whole.

        Returns:
            The entry, and whether the chunk defines schemas or channels (None: not known,
            it was not decompressed).
        """
        _start, _end, uncompressed_size, crc = CHUNK_HEAD.unpack_from(record, 0)
        pos = CHUNK_HEAD.size
        (name_length,) = struct.unpack_from("<I", record, pos)
        compression = record[pos + 4 : pos + 4 + name_length].decode()
        pos += 4 + name_length
        (compressed_size,) = struct.unpack_from("<Q", record, pos)
        pos += 8
        if pos + compressed_size > length:
            raise ReaderError("its compressed data runs past the record")
        defines: bool | None = None
        if index is not None:
            counts, first, last = dict(index.counts), index.first, index.last
        else:
            data = decompress(
                record[pos : pos + compressed_size], compression, uncompressed_size, crc)
            counts, first, last, defines = _chunk_messages(data)
        info = ChunkInfo(
            message_start_time=first if counts else 0,
            message_end_time=last if counts else 0,
            chunk_start_offset=offset,
            chunk_length=RECORD_HEAD.size + length,
            message_index_offsets={},
            message_index_length=0,
            compression=compression,
            compressed_size=compressed_size,
            uncompressed_size=uncompressed_size,
            channel_count=counts,
        )
        return info, defines


class _Index:
    """What the message index records after a chunk say: messages per channel, log times."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = defaultdict(int)
        self.first = 2**63 - 1
        self.last = 0

    def add(self, content: bytes) -> bool:
        """Take one message index record's content; False when it is not one."""
        if len(content) < MESSAGE_INDEX_HEAD.size:
            return False
        channel, length = MESSAGE_INDEX_HEAD.unpack_from(content, 0)
        if length % 16 or MESSAGE_INDEX_HEAD.size + length != len(content):
            return False
        times = struct.unpack_from(f"<{2 * (length // 16)}Q", content, MESSAGE_INDEX_HEAD.size)
        if times:
            self.counts[channel] += len(times) // 2
            self.first = min(self.first, min(times[0::2]))
            self.last = max(self.last, max(times[0::2]))
        return True


#: What ``ros2 bag record --compression-mode file`` makes of a storage file once it is closed.
FILE_COMPRESSED = ".zstd"


def storage_kind(path: Path) -> str:
    """``.db3`` or ``.mcap`` for a storage file, compressed whole (``.db3.zstd``) or not.

    Empty for anything else.
    """
    suffixes = path.suffixes[-2:] if path.suffix == FILE_COMPRESSED else path.suffixes[-1:]
    kind = suffixes[0] if suffixes else ""
    return kind if kind in (".db3", ".mcap") else ""


def storage_files(folder: Path) -> list[Path]:
    """A bag folder's ``.db3`` and ``.mcap`` files, in rosbag2's split order (``_2``, ``_10``).

    Files compressed whole (``.db3.zstd``, ``--compression-mode file``) are among them.
    """

    def key(path: Path) -> tuple[int, str]:
        stem = path.name.removesuffix(FILE_COMPRESSED).removesuffix(storage_kind(path))
        index = re.search(r"_(\d+)$", stem)
        return (int(index.group(1)) if index else -1, path.name)

    return sorted((p for p in folder.iterdir() if storage_kind(p)), key=key)


def _unpacked_size(path: Path) -> int:
    """Bytes a file compressed whole takes unpacked: its zstd frame's size, if the frame says it.

    Else its own size, the least it can take.
    """
    with path.open("rb") as f:
        head = f.read(18)  # the longest zstd frame header
    try:
        size = zstd.get_frame_info(head).decompressed_size
    except Exception:  # noqa: BLE001 - not a zstd frame: found when it is unpacked
        size = None
    return int(size) if size is not None else path.stat().st_size


def _spanned(metadata: ReaderMetadata, storages: list[Any]) -> ReaderMetadata:
    """``metadata`` with the message count and log times of ``storages`` together."""
    used = [s.metadata for s in storages if s.metadata.message_count]
    count = sum(m.message_count for m in used)
    start = min((m.start_time for m in used), default=2**63 - 1)
    end = max((m.end_time for m in used), default=0)
    return metadata._replace(duration=end - start if count else 0, start_time=start,
                             end_time=end, message_count=count)


class _DirectoryReader(DirectoryReader):
    """rosbags' bag folder reader; without metadata.yaml, its storage files as one bag."""

    STORAGE_PLUGINS = {"mcap": CutOffMcapReader, "sqlite3": RescuingSqlite3Reader}

    def __init__(self, path: Any) -> None:
        self.unindexed = not (path / "metadata.yaml").exists()
        #: (storage file, why) for each file of a folder without metadata.yaml that could not
        #: be opened: left out, the others read.
        self.unreadable: list[tuple[str, str]] = []
        #: The folder's file each storage read comes from, by the storage's path (a
        #: ``.zstd`` compressed one is read from a copy unpacked to a temporary folder).
        self.sources: dict[str, str] = {}
        if not self.unindexed:
            super().__init__(path)
            return
        self.path = path
        self.connections: list[Connection] = []
        self.metadata = ReaderMetadata(0, 2**63 - 1, 0, 0, None, None, None, None)
        self.files = []
        self.storages = []
        self.stack = None

    def open(self) -> None:
        if not self.unindexed:
            super().open()
            if any(isinstance(s, RescuingSqlite3Reader)
                   and (s.rebuilt or (s.wal and s.wal.messages)) for s in self.storages):
                self._count_from_files()
            return
        self.stack = ExitStack()
        try:
            self._open_unindexed()
        except BaseException:
            with suppress(Exception):
                self.close()
            raise

    def _count_from_files(self) -> None:
        """Counts and times from the files, when a write-ahead log added messages to them.

        metadata.yaml (rosbag2 rewrites it at each split) was written before those messages,
        or counted those a damaged file lost.
        """
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for storage in self.storages:
            for conn in storage.connections:
                counts[conn.topic, conn.msgtype] += conn.msgcount
        self.connections = [c._replace(msgcount=counts.get((c.topic, c.msgtype), c.msgcount))
                            for c in self.connections]
        self.metadata = _spanned(self.metadata, self.storages)

    def _open_unindexed(self) -> None:
        assert self.stack is not None
        files = storage_files(Path(str(self.path)))
        kinds = {storage_kind(p) for p in files}
        if len(kinds) != 1:
            raise ReaderError(
                f"{self.path} has no metadata.yaml and "
                + ("both .db3 and .mcap files: pass one of them" if kinds
                   else "no .db3 or .mcap file: it is not a ROS 2 bag folder")
            )
        plugin: type[Any] = CutOffMcapReader if kinds == {".mcap"} else RescuingSqlite3Reader
        storages: list[Any] = []
        first_error: Exception | None = None
        unpacked: str | None = None  # the temporary folder compressed files are unpacked to
        for path in files:
            source = path
            try:
                if path.suffix == FILE_COMPRESSED:
                    # A split closed by the recorder and compressed whole; the one it was
                    # writing when it stopped is not (rosbag2 compresses a file on closing it).
                    check_room(_unpacked_size(path))
                    if unpacked is None:
                        unpacked = self.stack.enter_context(TemporaryDirectory())
                    source = Path(unpacked, path.name.removesuffix(FILE_COMPRESSED))
                    with path.open("rb") as raw, zstd.open(raw, "rb") as infile, \
                            source.open("wb") as outfile:
                        shutil.copyfileobj(infile, outfile)
                storage = plugin(source)
                storage.open()
            except Exception as exc:  # noqa: BLE001 - rosbags, apsw: the file is unreadable
                # A recorder that lost power may leave its last file damaged; the others hold
                # what it recorded before.
                first_error = first_error or exc
                self.unreadable.append((str(path), f"{exc}".rstrip(".")))
                continue
            self.stack.callback(storage.close)
            storages.append(storage)
            self.sources[str(source)] = str(path)
        if not storages:
            assert first_error is not None
            raise first_error
        self.storages = sorted(storages, key=lambda s: s.metadata.start_time)
        # One connection per topic, type and QoS, as metadata.yaml would list it; the files'
        # own connections are matched to these by ``messages``.
        for storage in self.storages:
            for conn in storage.connections:
                same = next((i for i, c in enumerate(self.connections)
                             if (c.topic, c.msgtype, c.ext) == (conn.topic, conn.msgtype,
                                                                 conn.ext)), None)
                if same is None:
                    self.connections.append(
                        conn._replace(id=len(self.connections) + 1, owner=self))
                else:
                    known = self.connections[same]
                    self.connections[same] = known._replace(
                        msgcount=known.msgcount + conn.msgcount)
        self.metadata = _spanned(self.metadata, self.storages)


class RecoveringReader(Reader):
    """rosbags' ``Reader`` for recordings that may not have been closed (module docstring)."""

    STORAGE_PLUGINS = {
        ".mcap": CutOffMcapReader, ".db3": RescuingSqlite3Reader, "dir": _DirectoryReader}

    @property
    def unindexed_files(self) -> list[str]:
        """The storage files of a folder read without metadata.yaml (else empty)."""
        storage = self.storage
        if isinstance(storage, _DirectoryReader) and storage.unindexed:
            paths = [str(getattr(s, "source", getattr(s, "path", ""))) for s in storage.storages]
            return [storage.sources.get(p, p) for p in paths]
        return []

    @property
    def unreadable_files(self) -> list[tuple[str, str]]:
        """(file, why) for each file of a folder without metadata.yaml left out: it won't open."""
        return list(getattr(self.storage, "unreadable", []))

    def on_damaged(self, callback: Callable[[DamagedChunk], None]) -> None:
        """Call ``callback`` for each damaged chunk met while reading (``CutOffMcapReader``)."""
        for storage in getattr(self.storage, "storages", [self.storage]):
            if isinstance(storage, CutOffMcapReader):
                storage.on_damaged = callback

    def wal_logs(self) -> list[WalLog]:
        """What each ``.db3`` file's write-ahead log held and whether it was read."""
        storages = getattr(self.storage, "storages", [self.storage])
        return [s.wal for s in storages if isinstance(s, RescuingSqlite3Reader) and s.wal]

    def rebuilt(self) -> list[Rebuilt]:
        """What each damaged ``.db3`` file rebuilt from the rows that read gave."""
        storages = getattr(self.storage, "storages", [self.storage])
        return [s.rebuilt for s in storages
                if isinstance(s, RescuingSqlite3Reader) and s.rebuilt]

    def cut_offs(self) -> list[tuple[str, CutOff]]:
        """(file, what it kept and lost) for each storage file that was cut off."""
        storages = getattr(self.storage, "storages", [self.storage])
        return [
            (str(s.path), s.cut_off)
            for s in storages
            if isinstance(s, CutOffMcapReader) and s.cut_off is not None
        ]
