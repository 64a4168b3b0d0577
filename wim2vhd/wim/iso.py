"""A Windows ISO's install image (\\sources\\install.wim or install.esd), found without a mount.

    f = iso.find_install_image("Win11.iso")          # IsoFile: its path, size and extents in the ISO
    with iso.open_image("Win11.iso", temp_dir=os.path.dirname(out)) as (path, how):
        ...                # path: a name wimlib can open; how: "in place", or why it was copied

Windows ISOs (oscdimg -u2) carry their files in UDF only; the ISO 9660 side holds a README.  So UDF
(ECMA-167 / OSTA UDF: anchor at sector 256, volume descriptors, partition, file set, file entries and
identifiers) is read first, and ISO 9660 (with multi-extent files, as xorriso writes files of 4 GiB and
more) when there is no UDF or the file is not in it.  Only what is needed to find one file is parsed here.

wimlib opens files by path and reads them at absolute offsets, and Linux offers no unprivileged way to
name a byte range of another file as a file (that takes a loop device or FUSE).  So (open_image):

* apply and info read the install image in place: wimlib is given the name of a view (wim2vhd.wim.view,
  native/w2v_vfile.c) whose bytes are the file's extents in the ISO, served from libwim's own hooked file
  calls.  An ISO then needs no more free space than its WIM, and reads as fast.
* where those calls cannot be hooked (another wimlib build), or with WIM2VHD_ISO_COPY=1 in the
  environment, apply copies the install image to a temporary file beside the output (install_image),
  with copy_file_range: the kernel moves the data without a trip through user space, and file systems that
  share blocks (btrfs, XFS, NFS 4.2) may clone them.  The file is registered with wim2vhd.atomic's cleanup
  and removed on every path: success, error, Ctrl-C, SIGTERM.  info (metadata_only=True) then copies only
  the WIM header, the blob table and the XML, at their offsets into a sparse file of the image's size.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from wim2vhd import atomic
from wim2vhd.wim import header
from wim2vhd.errors import CorruptInput, InputError, NoSpace, UnsupportedInput, Wim2VhdError, from_oserror
from wim2vhd.units import format_size

SECTOR = 2048
NAMES = ("install.wim", "install.esd")

Extent = tuple  # (byte offset in the ISO, or None for an unrecorded run of zeros; length)


@dataclass(frozen=True)
class IsoFile:
    iso: str
    path: str          # as shown to people, e.g. \sources\install.wim
    size: int
    extents: tuple[Extent, ...]
    filesystem: str    # "UDF" or "ISO 9660"

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.path)[1].lower()


# -- reading ----------------------------------------------------------------------------------------------
# What finding the install image may read in all: a Windows ISO's directories and file entries come to a
# few hundred kilobytes; a damaged one could have the walk read the same large directory again and again.
FIND_BUDGET = 256 << 20


class _Reader:
    def __init__(self, f: BinaryIO, name: str, budget: int | None = None):
        self.f, self.name = f, name
        self.size = os.fstat(f.fileno()).st_size
        self.budget = budget

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise CorruptInput(f"{self.name}: the ISO is truncated or damaged (a structure points past its end)")
        if self.budget is not None:
            self.budget -= length
            if self.budget < 0:
                raise CorruptInput(f"{self.name}: its directories take more than {format_size(FIND_BUDGET)} to "
                                   "walk: the ISO is damaged")
        return os.pread(self.f.fileno(), length, offset)

    def read_extents(self, extents: tuple[Extent, ...], limit: int = 1 << 26) -> bytes:
        if sum(n for _, n in extents) > limit:
            raise CorruptInput(f"{self.name}: a directory of {format_size(sum(n for _, n in extents))} is not believable")
        return b"".join(bytes(n) if off is None else self.read(off, n) for off, n in extents)


def _tag_ok(d: bytes) -> int | None:
    """The tag identifier of an ECMA-167 descriptor whose tag checksum is right, else None."""
    if len(d) < 16:
        return None
    if (sum(d[0:4]) + sum(d[5:16])) & 0xFF != d[4]:
        return None
    return struct.unpack_from("<H", d, 0)[0]


def _dstring(b: bytes) -> str:
    """An OSTA compressed Unicode name: 8 (or 254) = one byte per character, 16 (or 255) = UTF-16BE."""
    if not b:
        return ""
    if b[0] in (8, 254):
        return b[1:].decode("latin-1")
    if b[0] in (16, 255):
        return b[1:len(b) - ((len(b) - 1) % 2)].decode("utf-16-be", "replace")
    raise CorruptInput(f"a UDF file name has an unknown encoding {b[0]}")


class _Udf:
    """Just enough UDF to walk directories and list a file's extents (type 1 partition maps)."""

    name = "UDF"

    def __init__(self, r: _Reader):
        self.r = r
        avdp = r.read(256 * SECTOR, SECTOR) if r.size >= 257 * SECTOR else b""
        if _tag_ok(avdp) != 2:
            raise LookupError("no UDF anchor")
        main_len, main_loc = struct.unpack_from("<II", avdp, 16)
        partitions: dict[int, int] = {}
        lvd = None
        for i in range(min(main_len // SECTOR, 64)):
            d = r.read((main_loc + i) * SECTOR, SECTOR)
            tid = _tag_ok(d)
            if tid == 5:  # partition descriptor: number, start sector
                partitions[struct.unpack_from("<H", d, 22)[0]] = struct.unpack_from("<I", d, 188)[0]
            elif tid == 6 and lvd is None:  # logical volume descriptor
                lvd = d
            elif tid in (8, None):  # terminating descriptor, or the end of what was written
                break
        if lvd is None or not partitions:
            raise CorruptInput(f"{r.name}: its UDF volume descriptors are incomplete")
        self.block = struct.unpack_from("<I", lvd, 212)[0]
        if self.block != SECTOR:
            raise UnsupportedInput(f"{r.name}: UDF logical blocks of {self.block} bytes are not supported")
        n_maps = struct.unpack_from("<I", lvd, 268)[0]
        pos, self.starts = 440, []
        for _ in range(n_maps):
            if pos + 6 > len(lvd):  # the maps must fit in the descriptor's sector
                raise CorruptInput(f"{r.name}: its UDF logical volume descriptor lists {n_maps} partition maps, "
                                   "more than it holds")
            mtype, mlen = lvd[pos], lvd[pos + 1]
            if mtype == 1:
                num = struct.unpack_from("<H", lvd, pos + 4)[0]
                if num not in partitions:
                    raise CorruptInput(f"{r.name}: UDF partition {num} is mapped but not described")
                self.starts.append(partitions[num])
            else:
                ident = lvd[pos + 5:pos + 28].split(b"\0")[0].decode("latin-1", "replace")
                raise UnsupportedInput(f"{r.name}: UDF partition map {ident or mtype!r} is not supported "
                                       "(Windows ISOs use plain partitions)")
            pos += max(mlen, 6)
        fsd_len, fsd_lbn, fsd_ref = struct.unpack_from("<IIH", lvd, 248)
        fsd = self._block(fsd_ref, fsd_lbn)
        if _tag_ok(fsd) != 256:
            raise CorruptInput(f"{r.name}: no UDF file set descriptor where the volume says")
        self.root_icb = self._long_ad(fsd, 400)[1:]

    def _offset(self, ref: int, lbn: int) -> int:
        if ref >= len(self.starts):
            raise CorruptInput(f"{self.r.name}: a UDF address names partition {ref}, which does not exist")
        return (self.starts[ref] * SECTOR) + lbn * self.block

    def _block(self, ref: int, lbn: int) -> bytes:
        return self.r.read(self._offset(ref, lbn), self.block)

    @staticmethod
    def _long_ad(d: bytes, pos: int) -> tuple[int, int, int]:
        length, lbn, ref = struct.unpack_from("<IIH", d, pos)
        return length, lbn, ref

    def root(self):
        return self.root_icb

    def entry(self, icb) -> tuple[bool, int, tuple[Extent, ...], bytes | None]:
        """(is a directory, size, extents, embedded data) of the file entry at icb = (lbn, partition ref)."""
        lbn, ref = icb
        d = self._block(ref, lbn)
        tid = _tag_ok(d)
        if tid == 261:    # file entry
            ea, ad, start = struct.unpack_from("<I", d, 168)[0], struct.unpack_from("<I", d, 172)[0], 176
        elif tid == 266:  # extended file entry
            ea, ad, start = struct.unpack_from("<I", d, 208)[0], struct.unpack_from("<I", d, 212)[0], 216
        else:
            raise CorruptInput(f"{self.r.name}: no UDF file entry where a directory points")
        ftype, flags = d[27], struct.unpack_from("<H", d, 34)[0]
        size = struct.unpack_from("<Q", d, 56)[0]
        is_dir = ftype == 4
        ads = d[start + ea:start + ea + ad]
        kind = flags & 7
        if kind == 3:  # the data is in the entry itself
            return is_dir, size, (), ads[:size]
        if kind not in (0, 1):
            raise UnsupportedInput(f"{self.r.name}: UDF extended allocation descriptors are not supported")
        extents: list[Extent] = []
        step = 8 if kind == 0 else 16
        total = 0
        for _hop in range(4096):  # continuation chains end; a loop would not
            nxt = None
            for p in range(0, len(ads) - step + 1, step):
                raw_len, lbn_x = struct.unpack_from("<II", ads, p)
                eref = ref if kind == 0 else struct.unpack_from("<H", ads, p + 8)[0]
                etype, elen = raw_len >> 30, raw_len & 0x3FFFFFFF
                if elen == 0:
                    break
                if etype == 3:  # the next extent of allocation descriptors
                    nxt = (eref, lbn_x)
                    break
                elen = min(elen, size - total)
                if elen <= 0:
                    break
                extents.append((self._offset(eref, lbn_x) if etype == 0 else None, elen))
                total += elen
            if nxt is None:
                break
            aed = self._block(*nxt)
            if _tag_ok(aed) != 258:
                raise CorruptInput(f"{self.r.name}: a UDF allocation extent descriptor is missing")
            n = struct.unpack_from("<I", aed, 20)[0]
            ads = aed[24:24 + n]
        if total < size:
            raise CorruptInput(f"{self.r.name}: a UDF file's extents cover {total} of its {size} bytes")
        return is_dir, size, tuple(_merge(extents)), None

    def listdir(self, icb) -> dict[str, tuple[str, object]]:
        """lower-case name -> (name, icb) of a directory's entries."""
        is_dir, size, extents, embedded = self.entry(icb)
        if not is_dir:
            return {}
        data = embedded if embedded is not None else self.r.read_extents(extents)
        out: dict[str, tuple[str, object]] = {}
        pos = 0
        while pos + 38 <= len(data):
            if _tag_ok(data[pos:pos + 16]) != 257:
                break
            chars, lfi = data[pos + 18], data[pos + 19]
            _, lbn, ref = self._long_ad(data, pos + 20)
            liu = struct.unpack_from("<H", data, pos + 36)[0]
            name_b = data[pos + 38 + liu:pos + 38 + liu + lfi]
            pos += (38 + liu + lfi + 3) & ~3
            if chars & 0x0C:  # deleted, or the parent entry
                continue
            name = _dstring(name_b)
            out[name.lower()] = (name, (lbn, ref))
        return out

    def is_dir(self, node) -> bool:
        return self.entry(node)[0]

    def file(self, node) -> tuple[int, tuple[Extent, ...]]:
        is_dir, size, extents, embedded = self.entry(node)
        if embedded is not None:
            raise UnsupportedInput(f"{self.r.name}: the install image is embedded in its UDF entry")
        return size, extents


class _Iso9660:
    """ISO 9660 directories and files, multi-extent files included (Rock Ridge and Joliet names are not
    needed: SOURCES\\INSTALL.WIM is a plain ISO 9660 name)."""

    name = "ISO 9660"

    def __init__(self, r: _Reader):
        self.r = r
        for s in range(16, 64):
            if (s + 1) * SECTOR > r.size:
                break
            d = r.read(s * SECTOR, SECTOR)
            if d[1:6] != b"CD001":
                break
            if d[0] == 1:
                self.block = struct.unpack_from("<H", d, 128)[0] or SECTOR
                rec = d[156:156 + 34]
                self._root = (True, struct.unpack_from("<I", rec, 10)[0],
                              ((struct.unpack_from("<I", rec, 2)[0] * self.block, struct.unpack_from("<I", rec, 10)[0]),))
                return
            if d[0] == 255:
                break
        raise LookupError("no ISO 9660 primary volume descriptor")

    def root(self):
        return self._root

    def listdir(self, node) -> dict[str, tuple[str, object]]:
        is_dir, size, extents = node
        data = self.r.read_extents(extents)
        out: dict[str, tuple[str, object]] = {}
        pos, pending = 0, None
        while pos < len(data):
            n = data[pos]
            if n == 0:  # records do not cross sectors: the rest of this one is padding
                pos = (pos // self.block + 1) * self.block
                continue
            rec = data[pos:pos + n]
            pos += n
            if len(rec) < 34:
                raise CorruptInput(f"{self.r.name}: a damaged ISO 9660 directory record")
            lba, length, flags, nlen = struct.unpack_from("<I", rec, 2)[0], struct.unpack_from("<I", rec, 10)[0], rec[25], rec[32]
            raw = rec[33:33 + nlen]
            if raw in (b"\0", b"\1"):
                continue
            name = raw.decode("latin-1").split(";")[0].rstrip(".")
            ext = (lba * self.block, length)
            if pending is not None and pending[0] == name:
                exts = pending[1] + [ext]
            else:
                exts = [ext]
            if flags & 0x80:  # more extents of this file follow
                pending = (name, exts)
                continue
            pending = None
            out[name.lower()] = (name, (bool(flags & 2), sum(e[1] for e in exts), tuple(_merge(exts))))
        return out

    def is_dir(self, node) -> bool:
        return node[0]

    def file(self, node) -> tuple[int, tuple[Extent, ...]]:
        return node[1], node[2]


def _merge(extents) -> list[Extent]:
    """Adjacent extents as one (UDF splits files into extents of under 1 GiB; they are usually contiguous)."""
    out: list[list] = []
    for off, n in extents:
        if out and off is not None and out[-1][0] is not None and out[-1][0] + out[-1][1] == off:
            out[-1][1] += n
        elif out and off is None and out[-1][0] is None:
            out[-1][1] += n
        else:
            out.append([off, n])
    return [(a, b) for a, b in out]


def _candidates(fs) -> list[tuple[str, object]]:
    """(shown path, node) of install images: \\sources first, then \\<folder>\\sources (dual-architecture ISOs)."""
    root = fs.listdir(fs.root())

    def in_sources(listing, prefix):
        src = listing.get("sources")
        if src is None or not fs.is_dir(src[1]):
            return []
        files = fs.listdir(src[1])
        for n in NAMES:
            if n in files and not fs.is_dir(files[n][1]):
                return [(f"{prefix}\\{src[0]}\\{files[n][0]}", files[n][1])]
        return []

    top = in_sources(root, "")
    if top:
        return top
    found = []
    for name, node in root.values():
        if name.lower() != "sources" and fs.is_dir(node):
            found += in_sources(fs.listdir(node), f"\\{name}")
    return found


def find_install_image(iso_path: str) -> IsoFile:
    """Where the install image is in an ISO; InputError if there is none."""
    iso_path = os.fspath(iso_path)
    if not os.path.exists(iso_path):
        raise InputError(f"{iso_path}: no such file")
    if os.path.isdir(iso_path):
        raise InputError(f"{iso_path}: is a directory, not an ISO")
    try:
        f = open(iso_path, "rb")
    except OSError as e:
        raise from_oserror(e, iso_path) from None
    with f:
        r = _Reader(f, iso_path, FIND_BUDGET)
        seen = []
        for kind in (_Udf, _Iso9660):
            try:
                fs = kind(r)
            except LookupError:
                continue
            seen.append(fs.name)
            found = _candidates(fs)
            if len(found) > 1:
                raise UnsupportedInput(f"{iso_path} holds several install images ({', '.join(p for p, _ in found)}): "
                                       f"copy out the one you want (7z x) and apply that")
            if found:
                shown, node = found[0]
                size, extents = fs.file(node)
                for off, n in extents:
                    if off is not None and off + n > r.size:
                        raise CorruptInput(f"{iso_path}: the ISO is truncated ({shown} goes past its end)")
                return IsoFile(iso_path, shown, size, extents, fs.name)
        if not seen:
            raise CorruptInput(f"{iso_path} is not an ISO image: it has neither a UDF nor an ISO 9660 file system")
        raise InputError(f"{iso_path} has no \\sources\\install.wim or install.esd: is it a Windows installation ISO?")


# -- copying --------------------------------------------------------------------------------------------------
def _copy_range(src: int, dst: int, src_off: int, dst_off: int, n: int) -> None:
    done = 0
    fast = True
    while done < n:
        want = min(n - done, 1 << 30)
        k = 0
        if fast:
            try:
                k = os.copy_file_range(src, dst, want, src_off + done, dst_off + done)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                    raise
                fast = False
        if not fast:
            buf = os.pread(src, min(want, 8 << 20), src_off + done)
            k = os.pwrite(dst, buf, dst_off + done) if buf else 0
        if k <= 0:
            raise CorruptInput("the ISO ended while its install image was being copied")
        done += k


def _space_check(directory: str, need: int, what: str) -> None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    spare = 64 << 20  # for the disk written beside it
    if free < need + spare:
        raise NoSpace(f"copying {what} out of the ISO needs {format_size(need)} in {directory}, and "
                      f"{format_size(spare)} to spare, but it has {format_size(free)} free",
                      hint="free some space, or extract it yourself (7z x) and apply that")


def copy_out(f: IsoFile, dst: str, *, metadata_only: bool = False) -> None:
    """Write the install image to `dst` (created), whole or as a sparse file with just what opening needs."""
    with open(f.iso, "rb") as src, open(dst, "wb") as out:
        r = _Reader(src, f.iso)
        sfd, dfd = src.fileno(), out.fileno()
        ranges = None
        if metadata_only:
            ranges = header.metadata_ranges(lambda o, n: _read_file_range(r, f.extents, o, n), f.size)
        if ranges is None:
            ranges = [(0, f.size)]
        for start, length in ranges:
            _copy_file_range(sfd, dfd, f.extents, start, length)
        os.ftruncate(dfd, f.size)


def _pieces(extents, start: int, length: int) -> Iterator[tuple[int | None, int, int]]:
    """(ISO offset or None, file offset, length) covering [start, start+length) of a file."""
    pos = 0
    end = start + length
    for off, n in extents:
        a, b = max(pos, start), min(pos + n, end)
        if a < b:
            yield (None if off is None else off + (a - pos)), a, b - a
        pos += n
        if pos >= end:
            break


def _read_file_range(r: _Reader, extents, start: int, length: int) -> bytes:
    return b"".join(bytes(n) if off is None else r.read(off, n) for off, _, n in _pieces(extents, start, length))


def _copy_file_range(sfd: int, dfd: int, extents, start: int, length: int) -> None:
    for off, at, n in _pieces(extents, start, length):
        if off is not None:
            _copy_range(sfd, dfd, off, at, n)


def _opens(path: str) -> bool:
    from wim2vhd.errors import Wim2VhdError
    from wim2vhd.wim import Wim
    try:
        with Wim(path) as w:
            w.images()
        return True
    except Wim2VhdError:
        return False


@contextlib.contextmanager
def install_image(iso_path: str, *, temp_dir: str | None = None, metadata_only: bool = False,
                  found: IsoFile | None = None) -> Iterator[str]:
    """The ISO's install image as a temporary file that wimlib can open, removed when the block ends.
    `temp_dir`: where to put it (beside the output); metadata_only: enough for listing images only;
    found: what find_install_image(iso_path) returned, if the caller has it."""
    f = found or find_install_image(iso_path)
    directory = temp_dir or os.path.dirname(os.path.abspath(iso_path))
    if metadata_only and temp_dir is None:
        import tempfile
        directory = tempfile.gettempdir()
    if not metadata_only:
        _space_check(directory, f.size, f.path)
    tmp = os.path.join(directory, f".{os.path.basename(iso_path)}.{secrets.token_hex(4)}{f.suffix}.w2v-tmp")
    atomic.track(tmp)  # removed by wim2vhd.atomic at exit too, should anything skip the finally below
    try:
        try:
            copy_out(f, tmp, metadata_only=metadata_only)
            if metadata_only and not _opens(tmp):
                _space_check(directory, f.size, f.path)
                copy_out(f, tmp)  # a layout the sparse copy missed: the whole file, then
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise NoSpace(f"copying {f.path} out of {iso_path} to {directory}: {os.strerror(e.errno)}") from None
            raise from_oserror(e, f"copying {f.path} out of {iso_path} to {directory}", output=True) from None
        try:
            yield tmp
        except Wim2VhdError as e:
            if tmp not in str(e):
                raise
            # The temporary copy is gone when the user reads this: name the ISO and the file in it.
            raise e.renamed(tmp, f"{iso_path} ({f.path})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        atomic.untrack(tmp)


IN_PLACE = "in place"
COPY_ENV = "WIM2VHD_ISO_COPY"  # set to 1: read ISOs through a temporary copy (to compare, or to rule the views out)


def _renaming(name: str, shown: str):
    """An error naming `name` (a copy or a view, which mean nothing to people) names `shown` instead."""
    @contextlib.contextmanager
    def block():
        try:
            yield
        except Wim2VhdError as e:
            if name not in str(e):
                raise
            raise e.renamed(name, shown) from None
    return block()


@contextlib.contextmanager
def open_image(iso_path: str, *, temp_dir: str | None = None, metadata_only: bool = False,
               found: IsoFile | None = None) -> Iterator[tuple[str, str]]:
    """(a name wimlib can open for the ISO's install image, how it is read: IN_PLACE, or "copied: why").
    In place through a view of its extents when libwim's file calls can be hooked, else through
    install_image's temporary copy (temp_dir, metadata_only: as there)."""
    from wim2vhd.wim import view
    f = found or find_install_image(iso_path)
    why = None
    if os.environ.get(COPY_ENV, "") not in ("", "0"):
        why = f"{COPY_ENV} is set"
    elif not view.available():
        why = "this wimlib's file calls cannot be hooked"
    if why is not None:
        with install_image(iso_path, temp_dir=temp_dir, metadata_only=metadata_only, found=f) as path:
            yield path, f"copied ({why})"
        return
    # A name no file has: wimlib's hooked calls alone know it (os.path.exists is False).
    name = f"{os.path.abspath(iso_path)}#w2v-view-{secrets.token_hex(4)}{f.suffix}"
    with view.View(name, iso_path, f.size, f.extents), _renaming(name, f"{iso_path} ({f.path})"):
        yield name, IN_PLACE
