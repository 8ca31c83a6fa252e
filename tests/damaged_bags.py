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
