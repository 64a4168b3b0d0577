"""Read-only views of the file systems on a disk's partitions, for wim2vhd.verify.

* :class:`NtfsView`: an NTFS partition through libntfs-3g (wim2vhd.ntfs), read-only, and
  :func:`ntfs_volume_flags`, which reads the volume's dirty flag from the $Volume record
  itself (libntfs-3g's API here does not say);
* :class:`FatView`: the ESP, exported from the disk into a sparse temporary file and read
  with tools nobody here wrote: ``fsck.fat -n`` for the FAT's health, mtools for its files;
* :func:`hive_state`: whether a registry hive's base block says it was written cleanly;

Nothing here writes to the disk.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Any

from wim2vhd.errors import CorruptInput, EnvironmentFault, Wim2VhdError
from wim2vhd.fs.ntfs import NTFS_BOOT
from wim2vhd.ondisk import Record
from wim2vhd.units import MiB

# -- NTFS on-disk facts (NTFS 3.1 as Windows and libntfs-3g's layout.h describe it) ------------

NTFS_OEM = b"NTFS    "
BOOT_SIGNATURE = 0xAA55

MFT_RECORD = Record("NTFS FILE record header", "<", [
    ("magic", 0x00, "4s"),                    # "FILE"
    ("usa_offset", 0x04, "H"),                # update sequence array
    ("usa_count", 0x06, "H"),                 # its entries, the sequence number included
    ("attrs_offset", 0x14, "H"),
    ("flags", 0x16, "H"),
    ("bytes_in_use", 0x18, "I"),
    ("record_number", 0x2C, "I"),             # NTFS 3.1
], size=0x30)
ATTR_HEADER = Record("NTFS attribute header", "<", [
    ("type", 0x00, "I"),
    ("length", 0x04, "I"),
    ("non_resident", 0x08, "B"),
    ("value_length", 0x10, "I"),              # resident attributes
    ("value_offset", 0x14, "H"),
], size=0x18)
VOLUME_INFORMATION = Record("NTFS $VOLUME_INFORMATION", "<", [
    ("major", 0x08, "B"),
    ("minor", 0x09, "B"),
    ("flags", 0x0A, "H"),
], size=0x0C)
FILE_VOLUME = 3                      # MFT record number of $Volume
AT_VOLUME_INFORMATION = 0x70
AT_END = 0xFFFFFFFF
VOLUME_IS_DIRTY = 0x0001
FIXUP_STRIDE = 512                   # the update sequence protects every 512 bytes, whatever the sector size


def ntfs_boot_problem(boot: bytes, part_size: int, sector_size: int) -> str | None:
    """What is wrong with an NTFS boot sector, or None."""
    bs = NTFS_BOOT.parse(boot)
    if bs["oem_id"] != NTFS_OEM:
        return "no NTFS boot sector (no 'NTFS' signature)"
    if bs["end_marker"] != BOOT_SIGNATURE:
        return "the NTFS boot sector has no 0x55AA signature"
    if bs["bytes_per_sector"] != sector_size:
        return (f"the NTFS boot sector says {bs['bytes_per_sector']}-byte sectors; the disk has "
                f"{sector_size}-byte sectors")
    if not bs["sectors_per_cluster"] or bs["total_sectors"] * bs["bytes_per_sector"] > part_size:
        return "the NTFS boot sector's geometry does not fit its partition"
    return None


def _cluster_size(bs: dict[str, Any]) -> int:
    spc = bs["sectors_per_cluster"]
    return bs["bytes_per_sector"] * (1 << (256 - spc) if spc > 128 else spc)


def _apply_fixups(rec: bytearray) -> None:
    h = MFT_RECORD.parse(rec)
    usa, n = h["usa_offset"], h["usa_count"]
    if usa + 2 * n > len(rec) or (n - 1) * FIXUP_STRIDE > len(rec):
        raise CorruptInput("the $Volume MFT record has a bad update sequence array")
    usn = rec[usa:usa + 2]
    for i in range(1, n):
        end = i * FIXUP_STRIDE - 2
        if rec[end:end + 2] != usn:
            raise CorruptInput("the $Volume MFT record is torn (its update sequence does not match)")
        rec[end:end + 2] = rec[usa + 2 * i:usa + 2 * i + 2]


def ntfs_volume_flags(read, part_size: int) -> int:
    """The flags of the volume's $VOLUME_INFORMATION (VOLUME_IS_DIRTY = 1), from MFT record 3.

    `read(offset, n)` reads the partition.  Records 0 to 15 of the MFT lie in its first
    extent on every volume Windows or mkntfs makes, so record 3 is at mft_lcn plus 3 records."""
    bs = NTFS_BOOT.parse(read(0, 512))
    cluster = _cluster_size(bs)
    c = bs["clusters_per_mft_record"]
    size = c * cluster if c > 0 else 1 << -c
    off = bs["mft_lcn"] * cluster + FILE_VOLUME * size
    if size < MFT_RECORD.size or off + size > part_size:
        raise CorruptInput("the NTFS boot sector places the MFT outside its partition")
    rec = bytearray(read(off, size))
    h = MFT_RECORD.parse(rec)
    if h["magic"] != b"FILE" or h["record_number"] != FILE_VOLUME:
        raise CorruptInput("MFT record 3 is not $Volume")
    _apply_fixups(rec)
    pos, end = h["attrs_offset"], min(h["bytes_in_use"], size)
    while pos + ATTR_HEADER.size <= end:
        a = ATTR_HEADER.parse(rec, pos)
        if a["type"] == AT_END:
            break
        if a["length"] < ATTR_HEADER.size:
            raise CorruptInput("the $Volume MFT record has a damaged attribute")
        if a["type"] == AT_VOLUME_INFORMATION and not a["non_resident"]:
            return VOLUME_INFORMATION.parse(rec, pos + a["value_offset"])["flags"]
        pos += a["length"]
    raise CorruptInput("the $Volume MFT record has no $VOLUME_INFORMATION")


class NtfsView:
    """An NTFS partition opened read-only; `error` says why it could not be (then nothing else works)."""

    kind = "ntfs"

    def __init__(self, disk, part):
        from wim2vhd.ntfs import NtfsWindow
        from wim2vhd.ntfs import NtfsVolume
        self.part, self.vol, self.error = part, None, None
        self._win = NtfsWindow(disk, part.start, part.size, writable=False)
        try:
            self.vol = NtfsVolume(self._win.name, readonly=True)
        except Wim2VhdError as e:
            self.error = e.message.replace(self._win.name, f"partition {part.number}")
            self._win.__exit__(None, None, None)
            self._win = None

    def close(self) -> None:
        if self.vol is not None:
            try:
                self.vol.close()
            except Wim2VhdError:
                pass
            self.vol = None
        if self._win is not None:
            self._win.__exit__(None, None, None)
            self._win = None

    def exists(self, path: str) -> bool:
        return self.vol.exists(path.strip("\\"))

    def is_dir(self, path: str) -> bool:
        return self.vol.is_dir(path.strip("\\"))

    def read(self, path: str, length: int | None = None) -> bytes:
        return self.vol.read_file(path.strip("\\"), length=length)


# -- FAT through an exported image and tools nobody here wrote -----------------------------------

EXPORT_CHUNK = 4 * MiB


def _tool(name: str, args: list[str]) -> subprocess.CompletedProcess:
    from wim2vhd.fs import find_tool
    env = {**os.environ, "LC_ALL": "C",
           # mtools: no sanity check of the partition image's hidden sectors, and no ~/.mtoolsrc
           "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}
    try:
        return subprocess.run([find_tool(name), *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", env=env)
    except OSError as e:
        raise EnvironmentFault(f"cannot run {name}: {e.strerror}") from None


class FatView:
    """A FAT partition copied into a sparse temporary file under `tmp_dir`, read with fsck.fat and
    mtools."""

    kind = "fat"

    def __init__(self, disk, part, tmp_dir: str):
        self.part, self.error = part, None
        self.path = os.path.join(tmp_dir, f"partition{part.number}.img")
        zero = bytes(EXPORT_CHUNK)
        with open(self.path, "wb") as f:
            f.truncate(part.size)
            # only the ranges the disk holds data for (the rest reads as zeros), and of those only the
            # chunks that are not zero
            for start, length in disk.extents(part.start, part.end):
                for off in range(start, start + length, EXPORT_CHUNK):
                    data = disk.read(off, min(EXPORT_CHUNK, start + length - off))
                    if data != zero[:len(data)]:
                        f.seek(off - part.start)
                        f.write(data)
        self._names: dict[str, str] | None = None

    def close(self) -> None:
        pass  # the file goes with the temporary directory

    def fsck(self) -> str | None:
        """What `fsck.fat -n` (check, change nothing) finds wrong, on one line; None when clean."""
        cp = _tool("fsck.fat", ["-n", self.path])
        if cp.returncode == 0:
            return None
        lines = [ln.strip() for ln in (cp.stdout + cp.stderr).splitlines()
                 if ln.strip() and not ln.startswith("fsck.fat ") and self.path not in ln]
        return "; ".join(lines[:3]) or f"fsck.fat -n exited with {cp.returncode}"

    def _listing(self) -> dict[str, str]:
        """{lower-case path: path} of every file and directory (directories end in '/')."""
        if self._names is None:
            # -/ recursive, -b bare names, -a hidden and system files too
            cp = _tool("mdir", ["-/", "-b", "-a", "-i", self.path, "::/"])
            names = {}
            for ln in cp.stdout.splitlines():
                if ln.startswith("::/"):
                    p = ln[2:].rstrip()
                    names[p.lower()] = p
            if cp.returncode != 0 and not names:
                # mdir -/ fails on an empty root; a plain listing of the root tells empty from unreadable
                root = _tool("mdir", ["-b", "-a", "-i", self.path, "::/"])
                if root.returncode != 0 or root.stdout.strip():
                    raise CorruptInput(f"mdir cannot read the FAT volume: {(cp.stderr or cp.stdout).strip()[:200]}")
            self._names = names
        return self._names

    def _key(self, path: str) -> str:
        return "/" + path.replace("\\", "/").strip("/").lower()

    def exists(self, path: str) -> bool:
        k = self._key(path)
        return k in self._listing() or k + "/" in self._listing()

    def is_dir(self, path: str) -> bool:
        return self._key(path) + "/" in self._listing()

    def names_in(self, directory: str) -> list[str]:
        """The file names directly in a directory, as stored."""
        k = self._key(directory).rstrip("/") + "/"
        return [v.rsplit("/", 1)[1] for key, v in self._listing().items()
                if key.startswith(k) and "/" not in key[len(k):] and key != k]

    def read(self, path: str, length: int | None = None) -> bytes:
        name = self._listing()[self._key(path)]
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(self.path), prefix="file-") as out:
            cp = _tool("mcopy", ["-n", "-o", "-i", self.path, "::" + name, out.name])
            if cp.returncode != 0:
                raise CorruptInput(f"mcopy cannot read {path}: {(cp.stderr or cp.stdout).strip()[:200]}")
            with open(out.name, "rb") as f:
                return f.read() if length is None else f.read(length)


# -- registry hives and PE images -----------------------------------------------------------------

def hive_state(head: bytes) -> str | None:
    """What is wrong with a hive's base block (first 4 KiB), or None when it was written cleanly.

    A hive is dirty when its two sequence numbers differ: Windows bumps the first before it
    writes and the second after, and replays the hive's .LOG files at the next boot."""
    from wim2vhd.registry.regf import BASE_BLOCK
    if len(head) < BASE_BLOCK.size:
        return f"it is {len(head)} bytes long, shorter than a hive's base block"
    b = BASE_BLOCK.parse(head)
    if b["magic"] != b"regf":
        return "it is not a registry hive (no 'regf' signature)"
    check = 0
    for i in range(0, BASE_BLOCK.offset_of("checksum"), 4):
        check ^= int.from_bytes(head[i:i + 4], "little")
    if check != b["checksum"]:
        return "its base block checksum is wrong (the header is damaged)"
    if b["sequence1"] != b["sequence2"]:
        return (f"it is dirty: its sequence numbers {b['sequence1']} and {b['sequence2']} differ "
                "(a write was not finished; Windows replays the .LOG files)")
    return None
