"""BIOS boot code: the pure patch functions, and --bios-boot-code end to end.

The booting itself is checked in QEMU with SeaBIOS (tests/test_qemu_boot.py)."""

import pytest
from hypothesis import given, strategies as st

from tests.support import leftovers, sfdisk, to_raw, w2v

from wim2vhd.boot import biosboot
from wim2vhd.errors import UsageError

GRUB = biosboot.GRUB_PC_DIR


@given(st.binary(min_size=512, max_size=512), st.binary(min_size=512, max_size=512),
       st.integers(1, 2000))
def test_boot_sector_keeps_table_and_patches_grub(boot_img, mbr, lba):
    out = biosboot.boot_sector(boot_img, mbr, lba)
    assert len(out) == 512
    assert out[440:] == mbr[440:]                       # signature, table, 0x55AA: ours
    assert out[:0x5c] == boot_img[:0x5c]                 # GRUB's code before the patch points
    assert int.from_bytes(out[0x5c:0x64], "little") == lba
    assert out[0x64] == 0xFF and out[0x66:0x68] == b"\x90\x90"
    assert out[0x68:440] == boot_img[0x68:440]


@given(st.integers(1024, 60000), st.integers(1, 100))
def test_core_blocklist(n, lba):
    core = bytes(range(256)) * (n // 256) + b"\x01" * (n % 256)
    out = biosboot.core_with_blocklist(core, lba)
    nsec = -(-n // 512)
    assert len(out) == nsec * 512 and not any(out[n:])
    assert out[512:n] == core[512:n] and out[:500] == core[:500]
    assert int.from_bytes(out[500:508], "little") == lba + 1
    assert int.from_bytes(out[508:510], "little") == nsec - 1
    assert int.from_bytes(out[510:512], "little") == 0x820


def test_mbr_with_code_sizes():
    mbr = bytes(446) + b"\x11" * 64 + b"\x55\xaa"
    out = biosboot.mbr_with_code(b"\xfa\xeb\xfe", mbr)
    assert out[:3] == b"\xfa\xeb\xfe" and not any(out[3:440]) and out[440:] == mbr[440:]
    whole = b"\xcc" * 512
    assert biosboot.mbr_with_code(whole, mbr)[:440] == whole[:440]
    for bad in (b"", b"\x90" * 441, b"\x90" * 600):
        with pytest.raises(UsageError):
            biosboot.mbr_with_code(bad, mbr)


def test_core_image_is_reproducible_and_fits_the_gap():
    biosboot.core_image.cache_clear()
    a = biosboot.core_image()
    biosboot.core_image.cache_clear()
    b = biosboot.core_image()
    assert a == b
    diskboot = open(f"{GRUB}/diskboot.img", "rb").read()
    assert a[:500] == diskboot[:500]
    assert 512 * 4 < len(a) < (1 << 20) - 512


def test_user_boot_code(fixture_wim, tmp):
    code = tmp / "mbr.bin"
    code.write_bytes(b"\xfa\xf4\xeb\xfd" + b"W2V-USER-CODE")
    out = tmp / "u.vhd"
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "bios", "--bios-boot-code", code)
    raw = to_raw(out, tmp)
    with open(raw, "rb") as f:
        head = f.read(1 << 20)
    assert head[:17] == code.read_bytes() and not any(head[17:440])
    assert head[510:512] == b"\x55\xaa" and sfdisk(raw)["partitions"][0].get("bootable")
    assert not any(head[512:]), "no GRUB core image with the user's own code"


def test_user_boot_code_bad(fixture_wim, tmp):
    big = tmp / "big.bin"
    big.write_bytes(b"\x90" * 600)
    out = tmp / "x.vhd"
    for arg in (big, tmp / "missing.bin"):
        p = w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "bios",
                "--bios-boot-code", arg, check=False)
        assert p.returncode != 0 and p.stderr.count("\n") == 1 and "bios-boot-code" in p.stderr
        assert not out.exists() and not leftovers(tmp)


def _mbr_disk(path, first_lba):
    """A raw disk with an MBR whose one partition starts at first_lba."""
    from wim2vhd.disk import create_disk
    d = create_disk(str(path), 64 << 20)
    mbr = bytearray(512)
    mbr[446 + 4] = 0x07
    mbr[446 + 8:446 + 12] = first_lba.to_bytes(4, "little")
    mbr[446 + 12:446 + 16] = (1000).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    d.write(0, bytes(mbr))
    return d


def test_core_image_that_does_not_fit_is_refused(tmp):
    from wim2vhd.errors import NoSpace
    d = _mbr_disk(tmp / "small-gap.img", 8)  # 3.5 KiB before the partition: GRUB's core needs more
    with pytest.raises(NoSpace, match="does not fit"):
        biosboot.install_bios_boot(d)
    assert d.read(0, 440) == bytes(440), "nothing written when it does not fit"
    d.close()


def test_missing_grub_images_name_the_package(tmp):
    from wim2vhd.errors import EnvironmentFault
    d = _mbr_disk(tmp / "d.img", 2048)
    with pytest.raises(EnvironmentFault, match="grub-pc-bin"):
        biosboot.install_bios_boot(d, grub_dir=str(tmp / "no-grub"))
    with pytest.raises(UsageError, match="512-byte sectors"):
        biosboot.install_bios_boot(d, sector_size=4096)
    d.close()


def test_bad_grub_images_and_misuse_are_typed_errors(tmp):
    """What used to be bare ValueErrors (an "internal error: ValueError" to the user): a broken
    grub-pc-bin is the environment's fault, a disk without its MBR yet a bug of the caller."""
    from wim2vhd.disk import RawDisk
    from wim2vhd.errors import EnvironmentFault, InternalError
    with pytest.raises(EnvironmentFault, match="boot.img is 100 bytes"):
        biosboot.boot_sector(bytes(100), bytes(512))
    with pytest.raises(InternalError):
        biosboot.boot_sector(bytes(512), bytes(100))
    with pytest.raises(EnvironmentFault, match="core image of 500 bytes"):
        biosboot.core_with_blocklist(bytes(500))
    d = RawDisk.create(str(tmp / "blank.img"), 4 << 20)
    with pytest.raises(InternalError, match="no MBR"):
        biosboot.install_bios_boot(d)
    d.close()
