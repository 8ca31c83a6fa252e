"""Storage files as a power loss or a bad disk leaves them: their records, a damaged page."""

import struct


def mcap_records(data: bytes) -> list[tuple[int, int, int]]:
    """(opcode, start, end) of an MCAP file's top-level records, after its 8-byte magic."""
    records, pos = [], 8
    while pos + 9 <= len(data):
        op, length = struct.unpack_from("<BQ", data, pos)
        records.append((op, pos, pos + 9 + length))
        pos += 9 + length
        if op == 0x02:  # the footer; the end magic follows
            break
    return records


def mcap_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of an MCAP file's chunk records."""
    return [(start, end) for op, start, end in mcap_records(data) if op == 0x06]


def damage_db3_page(db3) -> None:
    """Overwrite, from the middle of ``db3`` on, the first overflow page of a message's data
    that another follows, so that sqlite fails on reading that message.

    B-tree pages start with their type (2 to 13); overflow pages with the next one's number,
    0 for the last of a chain, which sqlite does not follow (damage there is only wrong bytes).
    """
    data = bytearray(db3.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the page size, from the file header
    middle = next(at for at in range(len(data) // 2 // page * page, len(data), page)
                  if data[at] == 0 and any(data[at + 1 : at + 4]))
    data[middle : middle + page] = b"\xff" * page
    db3.write_bytes(bytes(data))


def kill_in_wal_mode(folder, killed, from_ns: int):
    """Copy bag ``folder`` to ``killed`` as a ``resilient``-preset recorder killed mid-way.

    The messages logged at or after ``from_ns`` end up in ``killed``'s ``.db3-wal`` only: the
    recorder committed them to sqlite's write-ahead log and was killed before a checkpoint
    moved them into the file. A killed recorder writes no metadata.yaml on closing.

    Returns:
        The ``.db3`` file in ``killed`` and the number of messages it and its log hold.
    """
    import shutil
    import sqlite3
    from pathlib import Path

    (db3,) = Path(folder).glob("*.db3")
    recorder = sqlite3.connect(db3)
    (total,) = recorder.execute("SELECT count(*) FROM messages").fetchone()
    tail = recorder.execute(
        "SELECT id, topic_id, timestamp, data FROM messages WHERE timestamp >= ?", (from_ns,)
    ).fetchall()
    recorder.execute("DELETE FROM messages WHERE timestamp >= ?", (from_ns,))
    recorder.commit()
    recorder.execute("PRAGMA journal_mode=WAL")
    recorder.execute("PRAGMA wal_autocheckpoint=0")
    recorder.executemany(
        "INSERT INTO messages (id, topic_id, timestamp, data) VALUES (?, ?, ?, ?)", tail)
    recorder.commit()
    shutil.copytree(folder, killed)  # while the recorder still has it open: the log stays
    recorder.close()
    (Path(killed) / "metadata.yaml").unlink(missing_ok=True)
    return Path(killed) / db3.name, total
