"""Reading a ``.db3`` recording that its recorder left unfinished or damaged.

- A recorder in WAL mode (rosbag2's ``resilient`` preset) that is killed or loses power leaves
  its last transactions in ``FILE-wal``. rosbags opens the file immutable, which does not read
  the log: the file and its log are copied to a temporary folder, sqlite merges them there (a
  torn last transaction fails its checksum and is dropped, as on any sqlite open), and the copy
  is read (``WalLog``).
- A file that sqlite refuses as damaged ("database disk image is malformed"), most often one
  cut short by a power loss with the default preset, is rebuilt in a temporary folder: its
  tables are created again from its schema and filled with every row that still reads, the
  messages row by row where a page fails; a cut-short file reads as if padded with zeros to
  the size its header gives (``Rebuilt``). This is what ``sqlite3 FILE .recover`` does,
  limited to the tables a rosbag2 file has, with apsw, which rosbags already uses.

The recording itself is never written to. ``RescuingSqlite3Reader`` plugs both into rosbags'
``Sqlite3Reader`` (its ``path`` and ``open``, rosbags 0.11.9).
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, NamedTuple, cast

import apsw
from rosbags.rosbag2 import ReaderError
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

#: Room left free beside a copy of a ``.db3`` in the temporary folder, bytes.
COPY_MARGIN = 256 * 2**20
#: Rows of a table read at once while rebuilding (images: up to a few MB each).
REBUILD_BATCH = 16
#: What apsw and rosbags say of a file sqlite finds damaged.
DAMAGED = ("malformed", "not a database", "corrupt")


class WalLog(NamedTuple):
    """A ``.db3`` file's write-ahead log that still held messages when the recorder stopped."""

    file: str
    """The ``.db3`` file; its log is ``FILE-wal``."""
    wal_bytes: int
    messages: int
    """Messages read from the log (0 when it was not merged)."""
    error: str | None
    """Why it could not be merged (and its messages are not read), else None."""


class Rebuilt(NamedTuple):
    """A damaged ``.db3`` file rebuilt from the rows that still read."""

    file: str
    reason: str
    """What sqlite said of the file."""
    missing_bytes: int
    """Bytes its header gives beyond its end (a file cut short), read as zeros."""
    messages: int
    """Messages read."""
    lost: int
    """Messages known lost: ids missing between the first and the last one read."""
    last_id: int
    """The last message id read; messages after it, if the recorder wrote any, are lost."""

    def describe(self) -> str:
        """One line for logs and reports."""
        cut = (f", {_size(self.missing_bytes)} short of the size its header gives"
               if self.missing_bytes else "")
        return (
            f"{self.file} is damaged ({self.reason}{cut}): it was rebuilt in a temporary "
            f"folder from the rows that still read, {self.messages} messages; {self.lost} "
            f"messages among them could not be read, and any the recorder wrote after message "
            f"id {self.last_id} are lost. The file is left as it is"
        )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes / 1e3:.1f} kB"


def wal_text(log: WalLog) -> str:
    """What to say about a ``.db3`` whose write-ahead log still held messages (``WalLog``)."""
    name = log.file
    held = (f"{name}-wal held {_bytes(log.wal_bytes)} that sqlite had not yet moved into "
            f"{name} when the recording stopped (the resilient storage preset's write-ahead "
            "log)")
    if log.error is None:
        return (f"{held}: its {log.messages} messages were read from a merged copy in a "
                "temporary folder; the recording's files are left as they are")
    return (f"{held}: merging them into a copy failed ({log.error}), so they are not read. On "
            f"a copy of both files, `sqlite3 {name} 'PRAGMA wal_checkpoint;'` moves them in")


def _bytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes} bytes"


def check_room(n_bytes: int) -> None:
    """Refuse a copy of ``n_bytes`` that would (nearly) fill the temporary folder.

    Raises:
        OSError: not enough free space there.
    """
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if free < n_bytes + COPY_MARGIN:
        raise OSError(
            f"a copy needs {n_bytes / 1e9:.2f} GB and the temporary folder {folder} has "
            f"{free / 1e9:.2f} GB free: set TMPDIR to a folder with room"
        )


def _message_count(uri: str) -> int:
    connection = sqlite3.connect(uri, uri=True)
    try:
        return int(connection.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        connection.close()


# -- rebuilding a damaged file -------------------------------------------------------------


def header_size(path: Path) -> tuple[int, int]:
    """(page size, bytes the file's header gives it); the file's own size when not valid.

    Raises:
        ValueError: the file does not start with an sqlite header.
    """
    with path.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise ValueError("it does not start with an sqlite header")
    (page,) = struct.unpack_from(">H", head, 16)
    page = 65536 if page == 1 else page
    # The page count at 28 is valid only where "version-valid-for" (92) is the change counter.
    change, pages = struct.unpack_from(">II", head, 24)
    (valid_for,) = struct.unpack_from(">I", head, 92)
    actual = path.stat().st_size
    return page, max(actual, pages * page if pages and valid_for == change else 0)


class _PaddedFile(apsw.VFSFile):
    """A file read as if it had ``size`` bytes: zeros after its real end."""

    def __init__(self, vfs: str, name: Any, flags: list[int], size: int) -> None:
        super().__init__(vfs, name, flags)
        self._size = size

    def xFileSize(self) -> int:  # noqa: N802 - apsw's name
        return max(int(super().xFileSize()), self._size)

    def xRead(self, amount: int, offset: int) -> bytes:  # noqa: N802 - apsw's name
        real = int(super().xFileSize())
        data = bytes(super().xRead(min(amount, real - offset), offset)) if offset < real else b""
        return data + bytes(amount - len(data))


class _PaddedVFS(apsw.VFS):
    """Opens files as ``_PaddedFile`` of ``size`` bytes."""

    def __init__(self, name: str, size: int) -> None:
        self._padded_size = size
        super().__init__(name=name, base="")

    def xOpen(self, name: Any, flags: list[int]) -> _PaddedFile:  # noqa: N802 - apsw's name
        return _PaddedFile("", name, flags, self._padded_size)


def _rows(source: apsw.Connection, table: str, sink: Any) -> tuple[int, int, int]:
    """Hand ``sink`` every row of ``table`` that reads, in rowid order, passing by those that fail.

    Returns:
        Rows read, rowids missing between the first and the last one read, the last rowid.
    """
    query = f'SELECT rowid, * FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT ?'

    def first(start: int) -> int | None:
        """The first rowid from ``start`` on; raises where the table fails there."""
        rows = source.execute(query, (start, 1)).fetchall()
        return int(cast(int, rows[0][0])) if rows else None

    def reads(start: int) -> bool:
        try:
            first(start)
            return True
        except apsw.Error:
            return False

    read = missing = 0
    last: int | None = None
    start = -(2**63)
    while True:
        try:
            rows = source.execute(query, (start, REBUILD_BATCH)).fetchall()
        except apsw.Error:
            try:
                rows = source.execute(query, (start, 1)).fetchall()
            except apsw.Error:
                # Past the rows that fail: doubling steps, then halving back to the first
                # start that reads (rowids are whole numbers).
                failed, step = start, 1
                while not reads(failed + step):
                    if failed + step >= 2**62:
                        return read, missing, last or 0
                    failed, step = failed + step, 2 * step
                good = failed + step
                while good - failed > 1:
                    middle = (failed + good) // 2
                    failed, good = (failed, middle) if reads(middle) else (middle, good)
                start = good
                continue
        if not rows:
            return read, missing, last or 0
        for row in rows:
            rowid = int(cast(int, row[0]))
            if last is not None:
                missing += rowid - last - 1
            sink(row[1:])
            read, last = read + 1, rowid
        start = rowid + 1


def rebuild(source: Path, dest: Path, reason: str) -> Rebuilt:
    """Rebuild the damaged rosbag2 file ``source`` as ``dest`` from the rows that still read.

    Raises:
        ValueError: ``source`` is no sqlite file, or its schema or topics do not read.
    """
    _page, size = header_size(source)
    vfs_name = f"iphd-padded-{id(dest)}"
    vfs = _PaddedVFS(vfs_name, size)
    try:
        src = apsw.Connection(f"file:{source}?immutable=1",
                              flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI,
                              vfs=vfs_name)
        try:
            counts = _copy_tables(src, dest)
        finally:
            src.close()
    finally:
        vfs.unregister()
    if not counts["topics"][0]:
        raise ValueError("none of its topics reads")
    messages, lost, last_id = counts["messages"]
    return Rebuilt(str(source), reason, size - source.stat().st_size, messages, lost, last_id)


def _copy_tables(src: apsw.Connection, dest: Path) -> dict[str, tuple[int, int, int]]:
    """Create ``src``'s tables and indexes in a new file ``dest`` with the rows that read.

    Returns:
        Per table, what ``_rows`` returned.
    """
    try:
        rows = src.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%'").fetchall()
    except apsw.Error as exc:
        raise ValueError(f"its schema does not read ({exc})") from exc
    schema = [(str(kind), str(name), str(sql)) for kind, name, sql in rows]
    tables = [(name, sql) for kind, name, sql in schema if kind == "table"]
    if not {"messages", "topics"} <= {name for name, _ in tables}:
        raise ValueError("its schema has no messages and topics tables")
    out = sqlite3.connect(dest)
    try:
        counts: dict[str, tuple[int, int, int]] = {}
        for name, sql in tables:
            out.execute(sql)
            columns = len(src.execute(f'PRAGMA table_info("{name}")').fetchall())
            insert = f'INSERT INTO "{name}" VALUES ({", ".join("?" * columns)})'

            def keep(row: tuple[Any, ...], insert: str = insert) -> None:
                out.execute(insert, row)

            counts[name] = _rows(src, name, keep)
        for kind, _name, sql in schema:  # indexes after the rows: faster
            if kind == "index":
                out.execute(sql)
        out.commit()
    finally:
        out.close()
    return counts


# -- the reader ------------------------------------------------------------------------------


class RescuingSqlite3Reader(Sqlite3Reader):
    """rosbags' sqlite3 reader, which also reads a write-ahead log and a damaged file.

    ``wal`` says what a write-ahead log held and whether it was read (a merge that fails reads
    the file alone); ``rebuilt`` what a damaged file gave. See the module docstring.
    """

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        #: The file named, not the copy read in its place.
        self.source = Path(str(path))
        self.wal: WalLog | None = None
        self.rebuilt: Rebuilt | None = None
        self._copies: list[TemporaryDirectory[str]] = []

    def open(self) -> None:
        """Open the file, a merged copy with its write-ahead log, or a rebuilt copy."""
        self._merge_wal()
        try:
            super().open()
        except ReaderError as exc:
            if not any(word in str(exc).lower() for word in DAMAGED):
                self._remove_copies()
                raise
            damaged = Path(str(self.path))
            try:
                check_room(damaged.stat().st_size)
                copy = self._new_copy(damaged.name)
                self.rebuilt = rebuild(damaged, copy, str(exc).split(": ", 1)[-1].rstrip("."))
                self.rebuilt = self.rebuilt._replace(file=str(self.source))
                self.path = copy
                super().open()
            except Exception as why:  # noqa: BLE001 - not rebuilt: say both
                self._remove_copies()
                self.rebuilt = None
                raise ReaderError(
                    f"{str(exc).rstrip('.')}; rebuilding it from the rows that still read "
                    f"failed too ({str(why).rstrip('.')})"
                ) from exc

    def _merge_wal(self) -> None:
        wal = Path(f"{self.source}-wal")
        size = wal.stat().st_size if wal.is_file() else 0
        if not size:
            return
        try:
            before = _message_count(f"file:{self.source}?immutable=1")
            check_room(self.source.stat().st_size + size)
            copy = self._new_copy(self.source.name)
            shutil.copyfile(self.source, copy)
            shutil.copyfile(wal, f"{copy}-wal")
            merge = sqlite3.connect(copy)
            try:
                merge.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                after = int(merge.execute("SELECT count(*) FROM messages").fetchone()[0])
            finally:
                merge.close()
        except (OSError, sqlite3.Error) as exc:
            self._remove_copies()
            self.wal = WalLog(str(self.source), size, 0, str(exc).rstrip("."))
            return
        self.path = copy
        self.wal = WalLog(str(self.source), size, after - before, None)

    def _new_copy(self, name: str) -> Path:
        folder = TemporaryDirectory(prefix="iphd-db3-")
        self._copies.append(folder)
        return Path(folder.name, name)

    def close(self) -> None:
        """Close the file and remove the copies read in its place, if any."""
        try:
            super().close()
        finally:
            self._remove_copies()

    def _remove_copies(self) -> None:
        copies, self._copies = self._copies, []
        self.path = self.source
        for copy in copies:
            copy.cleanup()
