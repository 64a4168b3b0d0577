"""A minimal empty Windows registry hive (regf), built from the format's facts.

hivex can edit a hive but cannot make one from nothing, so a new BCD store
starts from :func:`empty_hive`: a 4 KiB base block and one 4 KiB hbin holding
the root key (nk), its security descriptor (sk) and one free cell.  hivex then
opens the result for writing and grows it.

Format facts used (regf as Windows writes it):
  * base block: "regf", two sequence numbers (equal = cleanly written), a
    FILETIME, version 1.x, the root cell's offset relative to the first hbin,
    the size of all hbins, and at 0x1FC the XOR of the 127 dwords before it;
  * hbin: "hbin", its offset from the first hbin, its size (4 KiB multiple);
  * cells: a signed 32-bit size (negative = in use), 8-byte aligned;
  * nk: the key node; sk: a self-relative SECURITY_DESCRIPTOR with a
    circular list of sk cells and a reference count.
"""
from __future__ import annotations

import struct
from typing import Callable

from wim2vhd.ondisk import Record
from wim2vhd.security import SID_ADMINISTRATORS, SID_SYSTEM, SecurityDescriptor, allow

PAGE = 0x1000  # base block size and hbin granularity
HBIN_HEADER_SIZE = 0x20
NO_CELL = 0xFFFFFFFF

# -- declarative layouts -----------------------------------------------------
BASE_BLOCK = Record("regf base block", "<", [
    ("magic", "4s"),                # b"regf"
    ("sequence1", "I"),
    ("sequence2", "I"),
    ("timestamp", "Q"),             # FILETIME of the last write
    ("major", "I"),                 # 1
    ("minor", "I"),                 # 3 .. 6
    ("file_type", "I"),             # 0 = primary file
    ("file_format", "I"),           # 1 = direct memory load
    ("root_cell", "I"),             # offset from the first hbin
    ("hbins_size", "I"),            # bytes of all hbins
    ("clustering", "I"),            # 1
    ("file_name", "64s"),           # UTF-16LE tail of the file's name, informational
    ("reserved", "396s"),           # up to the checksum at 0x1FC
    ("checksum", "I"),
    ("reserved2", "3584s"),         # up to 4 KiB
])
assert BASE_BLOCK.size == PAGE and BASE_BLOCK.offset_of("checksum") == 0x1FC

HBIN = Record("regf hbin header", "<", [
    ("magic", "4s"),                # b"hbin"
    ("offset", "I"),                # from the first hbin
    ("size", "I"),
    ("reserved", "8s"),
    ("timestamp", "Q"),             # meaningful in the first hbin only
    ("spare", "I"),
])
assert HBIN.size == HBIN_HEADER_SIZE

NK = Record("regf nk cell", "<", [
    ("signature", "2s"),            # b"nk"
    ("flags", "H"),
    ("timestamp", "Q"),
    ("access_bits", "I"),
    ("parent", "I"),
    ("subkeys", "I"),
    ("volatile_subkeys", "I"),
    ("subkeys_list", "I"),
    ("volatile_subkeys_list", "I"),
    ("values", "I"),
    ("values_list", "I"),
    ("security", "I"),              # the sk cell
    ("class_name", "I"),
    ("max_subkey_name", "I"),
    ("max_subkey_class", "I"),
    ("max_value_name", "I"),
    ("max_value_data", "I"),
    ("work_var", "I"),
    ("name_length", "H"),
    ("class_length", "H"),
])
assert NK.size == 0x4C

SK = Record("regf sk cell", "<", [
    ("signature", "2s"),            # b"sk"
    ("reserved", "H"),
    ("flink", "I"),                 # next sk cell (itself when it is the only one)
    ("blink", "I"),                 # previous sk cell
    ("refcount", "I"),              # keys that use it
    ("descriptor_size", "I"),
])

# nk flags
KEY_HIVE_ENTRY = 0x0004             # the root key
KEY_NO_DELETE = 0x0008
KEY_COMP_NAME = 0x0020              # name is stored as Latin-1, not UTF-16

# -- security descriptor -----------------------------------------------------
# Registry key rights (winnt.h): what Windows grants on a BCD store's keys.
KEY_ALL_ACCESS = 0x000F003F
KEY_READ = 0x00020019               # READ_CONTROL | query value | enumerate subkeys | notify


def key_security_descriptor(administrators: int = KEY_ALL_ACCESS) -> bytes:
    """Self-relative SD: owner Administrators, group SYSTEM; a DACL allowing
    Administrators `administrators` and SYSTEM full control.

    Windows gives the root of a BCD store these two ACEs with full control
    (and Objects KEY_READ | WRITE_DAC for Administrators); every key that
    hivex adds shares its parent's descriptor (hivex copies the parent's sk).
    """
    return SecurityDescriptor(SID_ADMINISTRATORS, SID_SYSTEM,
                              (allow(SID_ADMINISTRATORS, administrators), allow(SID_SYSTEM, KEY_ALL_ACCESS))).to_bytes()


# -- pure helpers -------------------------------------------------------------
def align8(n: int) -> int:
    return (n + 7) & ~7


def cell(payload: bytes) -> bytes:
    """An allocated cell: negative size, then the payload, padded to 8 bytes."""
    size = align8(4 + len(payload))
    return struct.pack("<i", -size) + payload + b"\0" * (size - 4 - len(payload))


def free_cell(size: int) -> bytes:
    return struct.pack("<i", size) + b"\0" * (size - 4)


def _seal(fields: dict) -> bytes:
    """The packed base block with its checksum.  Windows never stores 0 or ~0 as
    the checksum (it would store 1 / 0xFFFFFFFE) while hivex checks the plain
    XOR: when the XOR is one of those, nudge an informational field instead so
    both readers accept the hive."""
    fields = dict(fields, checksum=0)
    block = BASE_BLOCK.pack(fields)
    csum = base_block_checksum(block)
    if csum in (0, 0xFFFFFFFF):
        name = bytearray((fields.get("file_name") or b"").ljust(64, b"\0"))
        if any(name):
            name[62] ^= 1   # the high byte of the last UTF-16 unit: changes the XOR, and only it
        else:
            name[0] = ord("w")
        fields["file_name"] = bytes(name)
        block = BASE_BLOCK.pack(fields)
        csum = base_block_checksum(block)
    fields["checksum"] = csum
    return BASE_BLOCK.pack(fields)


def base_block_checksum(block: bytes) -> int:
    """XOR of the dwords before 0x1FC, with the two values Windows avoids remapped."""
    csum = 0
    for (d,) in struct.iter_unpack("<I", block[:0x1FC]):
        csum ^= d
    # Windows never stores 0 or ~0 here; hivex checks the plain XOR, and
    # empty_hive() steers clear of both by construction (see below).
    return csum


def empty_hive(root_name: str = "NewStoreRoot", timestamp: int = 0) -> bytes:
    """The bytes of a valid hive holding one empty root key named `root_name`.

    `timestamp` is a Windows FILETIME (100 ns since 1601) used for the header,
    the hbin and the root key.  The result is 8 KiB: the smallest file hivex
    accepts.
    """
    name = root_name.encode("latin-1")
    if not 0 < len(name) <= 255:
        raise ValueError("root key name must be 1..255 Latin-1 characters")
    root_off = HBIN_HEADER_SIZE
    nk_payload_len = NK.size + len(name)
    sk_off = root_off + align8(4 + nk_payload_len)
    sd = key_security_descriptor()
    nk = NK.pack(dict(
        signature=b"nk", flags=KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME,
        timestamp=timestamp, access_bits=0, parent=0,
        subkeys=0, volatile_subkeys=0, subkeys_list=NO_CELL, volatile_subkeys_list=NO_CELL,
        values=0, values_list=NO_CELL, security=sk_off, class_name=NO_CELL,
        max_subkey_name=0, max_subkey_class=0, max_value_name=0, max_value_data=0,
        work_var=0, name_length=len(name), class_length=0,
    )) + name
    sk = SK.pack(dict(signature=b"sk", flink=sk_off, blink=sk_off, refcount=1,
                      descriptor_size=len(sd))) + sd
    cells = cell(nk) + cell(sk)
    assert sk_off == root_off + len(cell(nk))
    used = HBIN_HEADER_SIZE + len(cells)
    hbin = HBIN.pack(dict(magic=b"hbin", offset=0, size=PAGE, timestamp=timestamp, spare=0))
    hbin += cells + free_cell(PAGE - used)

    fields = dict(
        magic=b"regf", sequence1=1, sequence2=1, timestamp=timestamp,
        # Windows writes BCD stores as 1.3 with "lf" leaves; hivex adds "lh"
        # (hash) leaves, which format 1.5 introduced and every Windows since XP
        # reads (bootmgr and winload read the 1.5 SYSTEM hive with the same code).
        major=1, minor=5,
        file_type=0, file_format=1, root_cell=root_off, hbins_size=PAGE,
        clustering=1, file_name=b"", checksum=0,
    )
    out = _seal(fields) + hbin
    assert len(out) == 2 * PAGE
    return out


# -- rewriting every key's security descriptor ----------------------------------
SUBKEY_LIST = Record("regf subkey list header", "<", [("signature", "2s"), ("count", "H")])


def _nk_at(buf: bytes, off: int) -> dict:
    at = PAGE + off + 4  # past the cell's size
    nk = NK.parse(buf, at)
    if nk["signature"] != b"nk":
        raise ValueError(f"no key node at hive offset 0x{off:x}")
    raw = buf[at + NK.size:at + NK.size + nk["name_length"]]
    nk["name"] = raw.decode("latin-1" if nk["flags"] & KEY_COMP_NAME else "utf-16-le")
    nk["at"] = at
    return nk


def _subkey_offsets(buf: bytes, off: int, depth: int = 0) -> list[int]:
    at = PAGE + off + 4
    head = SUBKEY_LIST.parse(buf, at)
    sig, n = head["signature"], head["count"]
    first = at + SUBKEY_LIST.size
    if sig in (b"lf", b"lh"):   # (key, hash) pairs
        return [struct.unpack_from("<I", buf, first + 8 * i)[0] for i in range(n)]
    if sig == b"li":            # keys
        return [struct.unpack_from("<I", buf, first + 4 * i)[0] for i in range(n)]
    if sig == b"ri" and depth == 0:  # lists of lists, one level deep
        out: list[int] = []
        for i in range(n):
            out += _subkey_offsets(buf, struct.unpack_from("<I", buf, first + 4 * i)[0], 1)
        return out
    raise ValueError(f"unknown subkey list {sig!r} at hive offset 0x{off:x}")


def set_key_security(hive: bytes, descriptor_of: Callable[[tuple[str, ...]], bytes]) -> bytes:
    """The hive with each key's security descriptor replaced by
    descriptor_of(path), `path` being the key's names below the root (() for it).

    The descriptors go into sk cells of one new hbin appended to the hive, in
    one circular list with a reference count each; the old sk cells are freed.
    Nothing else moves, so every other cell keeps its offset.
    """
    buf = bytearray(hive)
    base = BASE_BLOCK.parse(buf)
    end = base["hbins_size"]
    if len(buf) != PAGE + end:
        raise ValueError("the hive's length does not match its base block")
    keys: list[tuple[dict, tuple[str, ...]]] = []
    seen: set[int] = set()
    todo = [(base["root_cell"], ())]
    while todo:
        off, path = todo.pop()
        if off in seen:
            raise ValueError("a loop in the key tree")
        seen.add(off)
        nk = _nk_at(buf, off)
        keys.append((nk, path))
        if nk["subkeys"]:
            todo += [(c, path + (_nk_at(buf, c)["name"],)) for c in _subkey_offsets(buf, nk["subkeys_list"])]
    old = {nk["security"] for nk, _ in keys}
    wanted = [descriptor_of(path) for _, path in keys]
    order = list(dict.fromkeys(wanted))           # each descriptor once, in first-use order
    sizes = [align8(4 + SK.size + len(sd)) for sd in order]
    offsets = [end + HBIN_HEADER_SIZE + sum(sizes[:i]) for i in range(len(order))]
    used = HBIN_HEADER_SIZE + sum(sizes)
    hbin_size = -(-used // PAGE) * PAGE
    hbin = bytearray(HBIN.pack(dict(magic=b"hbin", offset=end, size=hbin_size, timestamp=0, spare=0)))
    for i, sd in enumerate(order):
        n = len(order)
        hbin += cell(SK.pack(dict(signature=b"sk", flink=offsets[(i + 1) % n], blink=offsets[i - 1],
                                  refcount=wanted.count(sd), descriptor_size=len(sd))) + sd)
    if hbin_size > used:
        hbin += free_cell(hbin_size - used)
    for (nk, _), sd in zip(keys, wanted):
        NK.pack_into(buf, nk["at"], security=offsets[order.index(sd)])
    for off in old:                                # unreferenced now: free them
        size = struct.unpack_from("<i", buf, PAGE + off)[0]
        if size < 0 and buf[PAGE + off + 4:PAGE + off + 6] == b"sk":
            struct.pack_into("<i", buf, PAGE + off, -size)
    fields = BASE_BLOCK.parse(buf)
    fields["hbins_size"] = end + hbin_size
    buf[:PAGE] = _seal(fields)
    return bytes(buf + hbin)
