"""What fuzzing the parsers (tests/fuzz/) and reading them beside it found in partition.py and iso.py, each as
the input that showed it.  The tables are made by other people's writers (pycdlib's UDF writer; the GPT by
wim2vhd's writer, whose output sgdisk -v accepts in test_partition.py) and then damaged as described."""
import struct
from pathlib import Path

import pytest

from wim2vhd import partition
from wim2vhd.wim import iso
from wim2vhd.errors import CorruptInput, InputError

MiB = 1 << 20


class _Disk:
    """A disk held in memory, of any size (zeros where nothing was written), that counts what is read."""

    def __init__(self, size: int, sector_size: int = 512):
        self.size, self.sector_size = size, sector_size
        self.chunks: dict[int, bytes] = {}
        self.largest_read = 0

    def write(self, offset: int, data: bytes) -> None:
        self.chunks[offset] = bytes(data)

    def read(self, offset: int, length: int) -> bytes:
        self.largest_read = max(self.largest_read, length)
        assert length <= 1 << 30, f"a read of {length} bytes"  # what the unbounded reader asked for
        buf = bytearray(length)
        for off, piece in self.chunks.items():
            a, b = max(off, offset), min(off + len(piece), offset + length)
            if a < b:
                buf[a - offset:b - offset] = piece[a - off:b - off]
        return bytes(buf)


def _patch_gpt(disk: _Disk, lba: int, **fields) -> None:
    ss = disk.sector_size
    hdr = bytearray(disk.read(lba * ss, ss))
    partition.GPT_HEADER.pack_into(hdr, 0, header_crc32=0, **fields)
    n = partition.GPT_HEADER.parse(hdr)["header_size"]
    partition.GPT_HEADER.pack_into(hdr, 0, header_crc32=partition._crc(hdr[:n]))
    disk.write(lba * ss, bytes(hdr))


def test_gpt_entry_array_is_bounded():
    """A GPT header on a disk of 256 TiB asking for 65536 entries of 2 GiB: the reader asked for 128 TiB
    in one read (a MemoryError, or the OOM killer).  Now: CorruptInput, and no read of more than 16 MiB."""
    d = _Disk(1 << 48)
    layout = partition.plan_layout(d.size, 512, "native")
    partition.write_table(d, layout)
    assert partition.read_table(d).disk_guid == layout.disk_guid  # intact, it reads
    last = d.size // 512 - 1
    for lba in (1, last):
        _patch_gpt(d, lba, entry_size=1 << 31, num_entries=65536)
    d.largest_read = 0
    with pytest.raises(CorruptInput, match=r"primary GPT header: an entry array of 140737488355328 bytes"):
        partition.read_table(d)
    assert d.largest_read <= partition.GPT_MAX_ENTRIES_BYTES


@pytest.mark.parametrize("size", [136, 384])
def test_gpt_entry_size_is_128_times_a_power_of_two(size):
    """UEFI 2.10, 5.3.2: SizeOfPartitionEntry is 128 x 2^n; 136 and 384 passed the old check (a multiple of 8)."""
    d = _Disk(1 << 30)
    partition.write_table(d, partition.plan_layout(d.size, 512, "native"))
    for lba in (1, d.size // 512 - 1):
        _patch_gpt(d, lba, entry_size=size, num_entries=4)
    with pytest.raises(CorruptInput, match=f"bad entry size {size}"):
        partition.read_table(d)


# -- ISOs ------------------------------------------------------------------------------------------------------
def _udf_iso(path):
    import io

    import pycdlib
    w = pycdlib.PyCdlib()
    w.new(interchange_level=3, udf="2.60")
    w.add_directory(udf_path="/sources")
    w.add_fp(io.BytesIO(b"MSWIM\0\0\0" + bytes(200)), 208, udf_path="/sources/install.wim")
    w.write(str(path))
    w.close()


def _lvd_offset(data: bytes) -> int:
    main_len, main_loc = struct.unpack_from("<II", data, 256 * 2048 + 16)
    for i in range(main_len // 2048):
        off = (main_loc + i) * 2048
        if struct.unpack_from("<H", data, off)[0] == 6:
            return off
    raise AssertionError("no logical volume descriptor")


def test_udf_partition_maps_past_their_descriptor(tmp):
    """A logical volume descriptor that says it has 2^32-1 partition maps: the reader walked off the
    descriptor's sector (IndexError, an internal error).  Now: CorruptInput, one line."""
    p = tmp / "w.iso"
    _udf_iso(p)
    assert iso.find_install_image(str(p)).filesystem == "UDF"  # intact, it reads
    data = bytearray(p.read_bytes())
    lvd = _lvd_offset(data)
    struct.pack_into("<I", data, lvd + 268, 0xFFFFFFFF)
    struct.pack_into("<B", data, lvd + 440, 1)  # type-1 maps of 6 bytes each, as the first one is
    struct.pack_into("<B", data, lvd + 441, 6)
    data[lvd + 446:lvd + 2048] = bytes([1, 6, 0, 0, 0, 0]) * ((2048 - 446) // 6) + bytes((2048 - 446) % 6)
    data[lvd + 4] = (sum(data[lvd:lvd + 4]) + sum(data[lvd + 5:lvd + 16])) & 0xFF  # the tag checksum
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptInput, match="lists 4294967295 partition maps, more than it holds"):
        iso.find_install_image(str(p))


def _iso9660_with_many_big_dirs(path, n_dirs: int, dir_bytes: int) -> None:
    """An ISO 9660 volume (written here by hand, ECMA-119 8.4 and 9.1) whose root lists n_dirs directories,
    each of dir_bytes of zeros: the same sparse region, over and over."""
    size = dir_bytes + 64 * 2048

    def record(name: bytes, lba: int, length: int, flags: int) -> bytes:
        n = 33 + len(name) + (len(name) + 1) % 2
        r = bytearray(n)
        r[0] = n
        struct.pack_into("<I", r, 2, lba)
        struct.pack_into(">I", r, 6, lba)
        struct.pack_into("<I", r, 10, length)
        struct.pack_into(">I", r, 14, length)
        r[25], r[32] = flags, len(name)
        r[33:33 + len(name)] = name
        return bytes(r)

    root_lba, big_lba = 20, 64
    root = record(b"\0", root_lba, 2048, 2) + record(b"\1", root_lba, 2048, 2)
    root += b"".join(record(b"D%03d" % i, big_lba, dir_bytes, 2) for i in range(n_dirs))
    assert len(root) <= 2048
    pvd = bytearray(2048)
    pvd[0], pvd[1:6], pvd[6] = 1, b"CD001", 1
    struct.pack_into("<H", pvd, 128, 2048)
    pvd[156:190] = record(b"\0", root_lba, 2048, 2)
    term = bytearray(2048)
    term[0], term[1:6], term[6] = 255, b"CD001", 1
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(16 * 2048)
        f.write(bytes(pvd) + bytes(term))
        f.seek(root_lba * 2048)
        f.write(root)


def test_iso_walk_is_bounded(tmp):
    """A root of 40 directories that each take 60 MiB of the same sparse region: finding the install image
    read 2.4 GiB, and with more of them as long as one liked.  Now the walk reads at most FIND_BUDGET and
    says the ISO is damaged; a root of 3 such directories is still walked (and has no install image)."""
    few, many = tmp / "few.iso", tmp / "many.iso"
    _iso9660_with_many_big_dirs(few, 3, 60 * MiB)
    with pytest.raises(InputError, match=r"has no \\sources\\install.wim"):
        iso.find_install_image(str(few))
    _iso9660_with_many_big_dirs(many, 40, 60 * MiB)
    with pytest.raises(CorruptInput, match="its directories take more than 256 MiB to walk"):
        iso.find_install_image(str(many))


# -- BCD stores ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["seed-wrong-type-displayorder-binary"])
def test_add_vhd_refuses_a_displayorder_that_is_no_list(tmp, seed):
    """{bootmgr}'s displayorder stored as REG_BINARY (the fuzz seed of that name, as a hand-edited or damaged
    store has it): add-vhd failed with TypeError (exit 6).  Now exit 3, one line naming the element, and the
    store is left as it was, with no .bak beside it."""
    import hashlib
    import os

    from tests.support import w2v
    store = tmp / "BCD"
    store.write_bytes((Path(__file__).parent / "fuzz" / "corpus" / "bcd" / seed).read_bytes())
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    assert w2v("bcd", "show", store).returncode == 0  # it reads: the value is shown as hex
    p = w2v("bcd", "add-vhd", store, "--vhd-path", "\\w.vhdx", check=False)
    assert p.returncode == 3, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "the displayorder of {bootmgr} is not a list" in p.stderr
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
    assert sorted(os.listdir(tmp)) == ["BCD"]
