"""Make the seed corpora in tests/fuzz/corpus/<target>/ (committed; run again only to change them):

    .venv/bin/python -m tests.fuzz.seeds

Seeds come from other people's writers where there are some (qemu-img and qemu-io for VHD and VHDX, sgdisk
and sfdisk for partition tables, pycdlib's UDF and xorriso's ISO 9660 writers, wimcapture for the WIM inside
the ISOs) and from wim2vhd's own (its VHD/VHDX writer, its BCD stores, .reg text).  Files named seed-* are
rewritten here; found-* (inputs the fuzzers found, kept as regression cases) and known-* are never touched.
The reference BCD stores Windows wrote (shared/reference/bcd) are not copied: run.py adds them as a
read-only seed directory where they exist.
"""
from __future__ import annotations

from types import SimpleNamespace

import codecs
import hashlib
import io
import struct
import subprocess
import tempfile
from pathlib import Path

from tests.fuzz.targets import encode_sparse

CORPUS = Path(__file__).resolve().parent / "corpus"
MiB = 1 << 20


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _read(p: str | Path) -> bytes:
    with open(p, "rb") as f:
        return f.read()


def _put(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if any(p.read_bytes() == data for p in d.glob("seed-*")):
        return  # the same bytes already seed it
    (d / f"seed-{name}").write_bytes(data)


def _clear(target: str) -> None:
    d = CORPUS / target
    if d.is_dir():
        for p in d.glob("seed-*"):
            p.unlink()


# -- disks ---------------------------------------------------------------------------------------------------
def _with_table(path: str, layout: str) -> None:
    from wim2vhd import partition
    from wim2vhd.disk import open_disk
    with open_disk(path, writable=True) as d:
        partition.write_table(d, partition.plan_layout(d.size, d.sector_size, layout))
        d.write(2 * MiB + 4096, b"data" * 256)


def disks(tmp: Path) -> None:
    from wim2vhd.disk import VhdDisk, VhdxDisk
    for fmt, cls in (("vhd", VhdDisk), ("vhdx", VhdxDisk)):
        _clear(fmt)
        qfmt = "vpc" if fmt == "vhd" else "vhdx"
        # qemu's writer: dynamic, fixed, and dynamic with data written by qemu-io (BAT entries, bitmaps)
        for kind, opts in (("dynamic", []), ("fixed", ["-o", "subformat=fixed"])):
            p = tmp / f"q-{kind}.{fmt}"
            _run("qemu-img", "create", "-q", "-f", qfmt, *opts, str(p), "4M" if kind == "fixed" else "64M")
            if kind == "dynamic":
                _run("qemu-io", "-f", qfmt, "-c", "write -P 0x5a 0 4k", "-c", "write -P 0xa5 3M 8k", str(p))
            _put(fmt, f"qemu-{kind}", encode_sparse(_read(p)))
        # ours: dynamic with a GPT and an MBR, fixed, and a differencing child (its parent is not there)
        for layout in ("uefi", "bios"):
            p = tmp / f"w-{layout}.{fmt}"
            cls.create(str(p), 320 * MiB).close()
            _with_table(str(p), layout)
            _put(fmt, f"w2v-{layout}", encode_sparse(_read(p)))
        p = tmp / f"w-fixed.{fmt}"
        cls.create(str(p), 4 * MiB, dynamic=False).close()
        _put(fmt, "w2v-fixed", encode_sparse(_read(p)))
        parent = tmp / f"parent.{fmt}"
        cls.create(str(parent), 64 * MiB).close()
        child = tmp / f"child.{fmt}"
        with cls.open(str(parent)) as par:
            with cls.create(str(child), 0, parent=par) as c:
                c.write(0, b"x" * 4096)
        _put(fmt, "w2v-child", encode_sparse(_read(child)))


def qcow2s(tmp: Path) -> None:
    """qemu-img's qcow2 files (data written by qemu-io, compressed, version 2) and ours (with a table)."""
    from wim2vhd.disk import Qcow2Disk
    _clear("qcow2")
    p = tmp / "q.qcow2"
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", str(p), "64M")
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 4k", "-c", "write -P 0xa5 3M 8k", str(p))
    _put("qcow2", "qemu-data", encode_sparse(_read(p)))
    for name, opts in (("qemu-compressed", ["-c"]), ("qemu-v2", ["-o", "compat=0.10,cluster_size=4k"])):
        out = tmp / f"{name}.qcow2"
        _run("qemu-img", "convert", "-O", "qcow2", *opts, str(p), str(out))
        _put("qcow2", name, encode_sparse(_read(out)))
    p = tmp / "w-uefi.qcow2"
    Qcow2Disk.create(str(p), 320 * MiB).close()
    _with_table(str(p), "uefi")
    _put("qcow2", "w2v-uefi", encode_sparse(_read(p)))


def partitions(tmp: Path) -> None:
    _clear("partition")
    for ss in (512, 4096):
        p = tmp / f"gpt{ss}.img"
        with open(p, "wb") as f:
            f.truncate(320 * MiB)
        # sgdisk writes for 512-byte sectors; a 4K table is what wim2vhd's writer makes
        if ss == 512:
            _run("sgdisk", "-q", "-n", "1:2048:+16M", "-t", "1:ef00", "-n", "2:0:0", "-t", "2:0700",
                 "-c", "2:Windows", str(p))
            _put("partition", "sgdisk-gpt", encode_sparse(_read(p)))
        from wim2vhd import partition
        t = partition.RawFileTarget(p, sector_size=ss)
        partition.write_table(t, partition.plan_layout(t.size, ss, "uefi"))
        t.close()
        _put("partition", f"w2v-gpt{ss}", encode_sparse(_read(p)))
    p = tmp / "mbr.img"
    with open(p, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["sfdisk", "-q", str(p)], input=b"label: dos\n,16M,7,*\n,,83\n", check=True, capture_output=True)
    _put("partition", "sfdisk-mbr", encode_sparse(_read(p)))
    # an empty disk of 1 GiB, an MBR on a disk of 2 TiB
    _put("partition", "empty", struct.pack("<Q", 1 << 30))
    big = bytearray(512)
    big[446:462] = bytes([0x80, 0, 0, 0, 7, 0, 0, 0]) + struct.pack("<II", 2048, (2 << 40) // 512 - 4096)
    big[510:512] = b"\x55\xaa"
    _put("partition", "mbr-2t", encode_sparse(bytes(big), size=2 << 40))


# -- ISOs ------------------------------------------------------------------------------------------------------
def _tiny_wim(tmp: Path) -> bytes:
    src = tmp / "wimsrc"
    (src / "Windows").mkdir(parents=True, exist_ok=True)
    (src / "Windows" / "a.txt").write_text("hello")
    out = tmp / "tiny.wim"
    if out.exists():
        out.unlink()
    _run("wimcapture", str(src), str(out), "Tiny", "--compress=none")
    return _read(out)


def isos(tmp: Path) -> None:
    import pycdlib
    _clear("iso")
    wim = _tiny_wim(tmp)
    for name, sub in (("udf", "/sources"), ("udf-dual", "/x64/sources")):
        w = pycdlib.PyCdlib()
        w.new(interchange_level=3, udf="2.60")
        w.add_fp(io.BytesIO(b"readme\n"), 7, "/README.TXT;1")
        parts = sub.strip("/").split("/")
        for i in range(len(parts)):
            w.add_directory(udf_path="/" + "/".join(parts[:i + 1]))
        w.add_fp(io.BytesIO(wim), len(wim), udf_path=f"{sub}/install.wim")
        p = tmp / f"{name}.iso"
        w.write(str(p))
        w.close()
        _put("iso", f"pycdlib-{name}", encode_sparse(_read(p)))
    d = tmp / "isotree" / "sources"
    d.mkdir(parents=True, exist_ok=True)
    (d / "install.wim").write_bytes(wim)
    p = tmp / "x.iso"
    _run("xorriso", "-as", "mkisofs", "-quiet", "-o", str(p), str(tmp / "isotree"))
    _put("iso", "xorriso-iso9660", encode_sparse(_read(p)))


# -- registry --------------------------------------------------------------------------------------------------
def stores(tmp: Path) -> None:
    from wim2vhd.boot import elements, store, values, view
    bcd = SimpleNamespace(BcdStore=store.BcdStore, RawValue=values.RawValue, describe=view.describe,
                          decode_element=values.decode_element, encode_element=values.encode_element,
                          format_value=values.format_value, value_to_json=values.value_to_json,
                          render_text=view.render_text, el=elements)  # (the BCD modules by job)
    from wim2vhd.boot.devices import Boot, File, GptPartition, Locate, MbrPartition, Ramdisk, Vhd
    import uuid
    _clear("bcd")
    _clear("hive")
    _clear("bcd_element")
    made = []
    for fw in ("uefi", "bios"):
        s = bcd.BcdStore.new_system_store(fw)
        s.add_os_loader("Windows VHD", Vhd("\\w.vhdx", Locate.by_path("\\w.vhdx")), firmware=fw, default=True)
        part = (GptPartition(uuid.UUID(int=1), uuid.UUID(int=2)) if fw == "uefi"
                else MbrPartition(0x1234abcd, 1 << 20))
        s.add_os_loader("Windows", part, firmware=fw)
        made.append((fw, s.to_bytes()))
        # element values, each as the bcd_element target reads them
        for o in s.objects():
            for eid in o.element_ids():
                v = o.raw(eid)
                data = struct.pack("<II", eid, int(v.type)) + v.data
                _put("bcd_element", f"{eid:08x}-{hashlib.sha1(data).hexdigest()[:8]}", data)
        s.close()
    for name, dev in (("file", File("\\boot.wim", Boot())),
                      ("ramdisk", Ramdisk("\\sources\\boot.wim", Boot()))):
        from wim2vhd.boot.devices import encode_device
        _put("bcd_element", f"device-{name}", struct.pack("<II", 0x11000001, 3) + encode_device(dev))
    made.append(("empty", bcd.BcdStore.new(system=False).to_bytes()))
    # {bootmgr}'s elements stored with the wrong registry type (as a damaged or hand-edited store has them):
    # what a reader shows as raw hex, and what an edit must not trip over
    from wim2vhd.boot.elements import E
    from wim2vhd.registry.hive import RegType
    for name, eid, rtype, data in (("displayorder-binary", E.DISPLAYORDER, RegType.BINARY, b"\1\2\3"),
                                   ("default-dword", E.DEFAULT, RegType.DWORD, b"\1\0\0\0"),
                                   ("timeout-sz", E.TIMEOUT, RegType.SZ, "30\0".encode("utf-16-le")),
                                   ("tools-sz", E.TOOLSDISPLAYORDER, RegType.SZ, "x\0".encode("utf-16-le"))):
        s = bcd.BcdStore.new_system_store("uefi")
        s.object(bcd.el.BOOTMGR).set(eid, bcd.RawValue(int(rtype), data))
        made.append((f"wrong-type-{name}", s.to_bytes()))
        s.close()
    for name, data in made:
        _put("bcd", name, data)
        _put("hive", f"bcd-{name}", data)
    from fixtures.hives import SYSTEM, build_hive
    _put("hive", "system", build_hive(SYSTEM, "SYSTEM"))


REGS = {
    "forms.reg": "Windows Registry Editor Version 5.00\r\n\r\n"
                 "; a comment\r\n"
                 "[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\w2v]\r\n"
                 "\"Start\"=dword:00000003\r\n"
                 "\"ImagePath\"=hex(2):25,00,53,00,79,00,73,00,25,00,5c,00,\\\r\n  78,00,00,00\r\n"
                 "\"Groups\"=hex(7):61,00,00,00,62,00,00,00,00,00\r\n"
                 "\"Big\"=hex(b):01,00,00,00,02,00,00,00\r\n"
                 "\"Blob\"=hex:de,ad,be,ef\r\n"
                 "\"Quote\"=\"a \\\"quoted\\\" C:\\\\path\"\r\n"
                 "@=\"default\"\r\n\r\n"
                 "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor]\r\n\"Gone\"=-\r\n\r\n"
                 "[-HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor\\Old]\r\n"
                 "[HKEY_CURRENT_USER\\Control Panel\\Desktop]\r\n\"Wallpaper\"=\"\"\r\n"
                 "[HKEY_CLASSES_ROOT\\.w2v]\r\n@=\"w2v.file\"\r\n"
                 "[HKEY_USERS\\.DEFAULT\\Keyboard Layout]\r\n\"x\"=hex(0):\r\n",
    "v4.reg": "REGEDIT4\r\n\r\n[HKLM\\SOFTWARE\\X]\r\n\"p\"=hex(2):41,42,00\r\n\"q\"=\"\xe9t\xe9\"\r\n",
}


def regs() -> None:
    _clear("regfile")
    for name, text in REGS.items():
        if name == "v4.reg":
            _put("regfile", name, text.encode("cp1252"))
            continue
        _put("regfile", name, text.encode("utf-8"))
        _put("regfile", "utf16-" + name, codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
        _put("regfile", "utf8bom-" + name, codecs.BOM_UTF8 + text.encode("utf-8"))


def main() -> None:
    from wim2vhd import repro
    # wim2vhd's own writers pinned: the same seeds every time (IDs and times derived, not drawn)
    with tempfile.TemporaryDirectory(prefix="w2v-seeds-") as t, repro.pinned("fuzz-seeds", 1700000000):
        tmp = Path(t)
        disks(tmp)
        qcow2s(tmp)
        partitions(tmp)
        isos(tmp)
        stores(tmp)
        regs()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
