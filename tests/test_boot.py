"""The boot stage of apply: boot files and the BCD store, read back with tools that are not ours."""
import json
import subprocess
import os
import uuid

import pytest

from tests.support import extract_partition, leftovers, regipy_store, run, sfdisk, to_raw, w2v, wim_with_arch


LOADER = 0x10200003


def esp_file(raw, path, out):
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run("mcopy", "-n", "-i", f"{raw}@@1M", f"::{path}", out, env=env)
    return out


def loaders(store):
    return {g: o for g, o in store.items() if o["type"] == LOADER}


def test_uefi_store_and_files(fixture_wim, tmp):
    out = tmp / "u.vhdx"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "2", "--size", "2G", "--json").stdout)
    assert res["boot"]["firmware"] == "uefi" and res["boot"]["template"]
    raw = to_raw(out, tmp)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    listing = run("mdir", "-/", "-b", "-i", f"{raw}@@1M", "::/EFI", env=env).stdout.lower()
    for f in ("/efi/microsoft/boot/bootmgfw.efi", "/efi/boot/bootx64.efi", "/efi/microsoft/boot/bcd",
              "/efi/microsoft/boot/en-us/", "/efi/microsoft/boot/fonts/", "/efi/microsoft/boot/resources/"):
        assert f in listing, f
    # bootx64.efi is bootmgfw.efi
    a, b = esp_file(raw, "/EFI/Boot/bootx64.efi", tmp / "a"), esp_file(raw, "/EFI/Microsoft/Boot/bootmgfw.efi", tmp / "b")
    assert a.read_bytes() == b.read_bytes()
    store = regipy_store(esp_file(raw, "/EFI/Microsoft/Boot/BCD", tmp / "BCD"))
    ld = loaders(store)
    assert len(ld) == 1
    (g, o), = ld.items()
    els = o["elements"]
    assert "winload.efi" in els["12000002"][1]
    name = json.loads(w2v("info", fixture_wim, "--json").stdout)["images"][1]["name"]
    assert els["12000004"][1] == name
    # device and osdevice: locate (as `bcdedit /set {default} device locate` writes)
    out_show = w2v("bcd", "show", tmp / "BCD").stdout
    assert "locate=custom:12000002" in out_show and "locate=custom:22000002" in out_show
    bootmgr = store["{9dea862c-5cdd-4e70-acc1-f32b344d4795}"]["elements"]
    assert bootmgr["23000003"][1].lower() == g  # default
    # the resume object holds no locate filedevice searching the volumes for \hiberfil.sys (as bcdboot)
    resume = store[els["23000003"][1].lower()]["elements"]
    assert "21000001" not in resume and resume["11000001"] == els["11000001"]
    # objects of the image's BCD-Template are kept
    assert "{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}" in store  # {globalsettings}


def test_partition_devices(fixture_wim, tmp):
    out = tmp / "p.vhdx"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "1", "--size", "2G", "--bcd-devices", "partition",
                         "--seed", "pd", "--json").stdout)
    raw = to_raw(out, tmp)
    store = regipy_store(esp_file(raw, "/EFI/Microsoft/Boot/BCD", tmp / "BCD"))
    (g, o), = loaders(store).items()
    dev = bytes.fromhex(o["elements"]["11000001"][1]) if isinstance(o["elements"]["11000001"][1], str) \
        else bytes(o["elements"]["11000001"][1])
    win = [p for p in res["layout"]["partitions"] if p["role"] == "windows"][0]
    assert uuid.UUID(win["guid"]).bytes_le in dev
    assert uuid.UUID(res["layout"]["disk_guid"]).bytes_le in dev
    assert "partition=gpt:" in w2v("bcd", "show", tmp / "BCD").stdout


def test_bios_files_in_ntfs(fixture_wim, tmp):
    out = tmp / "b.vhdx"
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "2G", "--layout", "bios")
    raw = to_raw(out, tmp)
    pt = sfdisk(raw)
    ntfs = extract_partition(raw, pt["partitions"][0], tmp, "n.img")
    root = run("ntfsls", "-a", ntfs).stdout.split()
    assert "bootmgr" in root and "Boot" in root
    boot = run("ntfsls", ntfs, "-p", "/Boot").stdout.split()
    assert "BCD" in boot and "Fonts" in boot
    (tmp / "BCD").write_bytes(subprocess.run(["ntfscat", ntfs, "/Boot/BCD"], capture_output=True, check=True).stdout)
    (g, o), = loaders(regipy_store(tmp / "BCD")).items()
    assert "winload.exe" in o["elements"]["12000002"][1]
    attrs = run("ntfsinfo", "-F", "/bootmgr", ntfs).stdout
    assert "HIDDEN" in attrs and "SYSTEM" in attrs
    # MBR boot code is there and the partition table survived it
    with open(raw, "rb") as f:
        head = f.read(1 << 20)
    mbr = head[:512]
    assert mbr[510:512] == b"\x55\xaa" and any(mbr[:440])
    assert sfdisk(raw) == pt
    # GRUB's boot.img code (its patch points aside) and its core.img, diskboot first, in sector 1
    grub = "/usr/lib/grub/i386-pc"
    boot_img = open(f"{grub}/boot.img", "rb").read()
    assert mbr[:0x5a] == boot_img[:0x5a] and mbr[0x68:440] == boot_img[0x68:440]
    assert int.from_bytes(mbr[0x5c:0x64], "little") == 1
    diskboot = open(f"{grub}/diskboot.img", "rb").read()
    assert head[512:512 + 500] == diskboot[:500]
    start, count = int.from_bytes(head[1012:1020], "little"), int.from_bytes(head[1020:1022], "little")
    assert start == 2 and 20 < count < 2046 and any(head[512 * (1 + count):512 * (2 + count)])


@pytest.mark.parametrize("template", [b"regf" + bytes(5000), b"garbage" * 100])
def test_damaged_bcd_template(tmp, template):
    """A damaged BCD-Template in the image: a one-line error naming it, exit 3, no disk left."""
    from fixtures.build import build_fixture_wim
    wim = build_fixture_wim(tmp / "bad.wim", overrides={"Windows/System32/config/BCD-Template": template})
    out = tmp / "o.vhdx"
    p = w2v("apply", wim, out, "--index", "1", "--size", "1G", check=False)
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "BCD-Template" in p.stderr, p.stderr
    assert not out.exists() and not leftovers(tmp)
    # without the boot stage the same image applies
    w2v("apply", wim, out, "--index", "1", "--size", "1G", "--no-boot")


# -- the removable-media fallback follows the image's architecture ---------------------------------
@pytest.mark.parametrize("arch, name", [(9, "bootx64.efi"), (12, "bootaa64.efi"), (0, "bootia32.efi")])
def test_fallback_loader_follows_the_architecture(fixture_wim, tmp, arch, name):
    """mdir (mtools) lists \\EFI\\Boot: exactly the loader for the image's architecture, and it is bootmgfw.efi."""
    wim = wim_with_arch(fixture_wim, tmp, arch)
    out = tmp / "a.vhdx"
    w2v("apply", wim, out, "--index", "1", "--size", "2G")
    raw = to_raw(out, tmp)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    listing = run("mdir", "-/", "-b", "-i", f"{raw}@@1M", "::/EFI/Boot", env=env).stdout.lower().split()
    assert [os.path.basename(f.rstrip("/")) for f in listing] == [name]
    a = esp_file(raw, f"/EFI/Boot/{name}", tmp / "a")
    b = esp_file(raw, "/EFI/Microsoft/Boot/bootmgfw.efi", tmp / "b")
    assert a.read_bytes() == b.read_bytes()


def test_bios_layout_refuses_arm64_up_front(fixture_wim, tmp):
    wim = wim_with_arch(fixture_wim, tmp, 12)
    out = tmp / "b.vhdx"
    for extra in ([], ["--no-boot"]):
        p = w2v("apply", wim, out, "--index", "1", "--size", "2G", "--layout", "bios", *extra, check=False)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert "ARM64" in p.stderr and "--layout uefi" in p.stderr and "Traceback" not in p.stderr
        assert not out.exists() and not leftovers(tmp)
    # several images: refused before the first disk (image 1, the ARM64 one, comes first; 2 is x64)
    run("wimlib-imagex", "info", wim, "1", "--image-property", "WINDOWS/ARCH=9")
    run("wimlib-imagex", "info", wim, "2", "--image-property", "WINDOWS/ARCH=12")
    p = w2v("apply", wim, tmp / "w-{index}.vhdx", "--index", "all", "--size", "2G", "--layout", "bios", check=False)
    assert p.returncode == 2 and "image 2" in p.stderr and "ARM64" in p.stderr, p.stderr
    assert not list(tmp.glob("w-*")) and not leftovers(tmp)
    # x86 boots from BIOS: no refusal
    run("wimlib-imagex", "info", wim, "2", "--image-property", "WINDOWS/ARCH=0")
    w2v("apply", wim, out, "--index", "2", "--size", "2G", "--layout", "bios")


def test_fallback_loader_without_arch_reads_the_pe_machine():
    """No WINDOWS/ARCH: the name follows bootmgfw.efi's PE/COFF machine (0xAA64 is ARM64 in the PE spec)."""
    from wim2vhd.boot.arch import fallback_loader

    def pe(machine):
        head = bytearray(0x80)
        head[:2] = b"MZ"
        head[0x3C:0x40] = (0x40).to_bytes(4, "little")
        head[0x40:0x46] = b"PE\0\0" + machine.to_bytes(2, "little")
        return bytes(head)
    assert fallback_loader(None, pe(0xAA64)) == "bootaa64.efi"
    assert fallback_loader(None, pe(0x014C)) == "bootia32.efi"
    assert fallback_loader(None, b"not a PE") == "bootx64.efi"
    assert fallback_loader("arm64", pe(0x8664)) == "bootaa64.efi"  # the image's ARCH comes first


# -- names are matched without regard to case, as on Windows ---------------------------------------
RECASE = {"PCAT": "Pcat", "BOOTNXT": "bootnxt", "bootmgr": "BOOTMGR", "memtest.exe": "MemTest.EXE",
          "bootmgfw.efi": "BootMgFw.EFI", "memtest.efi": "MEMTEST.efi", "Fonts": "FONTS"}


@pytest.fixture(scope="module")
def recased_wim(tmp_path_factory):
    """The fixture WIM with the boot files' names in other cases (\\Windows\\Boot\\Pcat\\bootnxt as
    in Windows' images, BOOTMGR, BootMgFw.EFI...); placeholder boot programs (nothing boots it)."""
    import dataclasses
    from fixtures.build import build_fixture_wim
    from fixtures.layout import EDITIONS

    def recase(path):
        if not path.lower().startswith("windows\\boot\\"):
            return path
        return "\\".join(RECASE.get(part, part) for part in path.split("\\"))
    editions = tuple(dataclasses.replace(ed, entries=tuple(dataclasses.replace(e, path=recase(e.path))
                                                           for e in ed.entries)) for ed in EDITIONS)
    d = tmp_path_factory.mktemp("recased")
    wim = build_fixture_wim(d / "recased.wim", editions=editions)
    names = subprocess.run(["wimlib-imagex", "dir", str(wim), "1", "--path", "/Windows/Boot"],
                           capture_output=True, text=True, check=True).stdout
    assert "/Windows/Boot/Pcat/bootnxt" in names and "/Windows/Boot/EFI/BootMgFw.EFI" in names  # wimlib lists it
    return wim


def test_bios_bootnxt_at_the_root_whatever_its_case(recased_wim, tmp):
    """ntfsls reads the Windows volume: \\bootmgr and \\BOOTNXT at the root (bcdboot's names), not under \\Boot;
    memtest.exe found (so {memdiag} is in the store, read with regipy)."""
    out = tmp / "b.vhdx"
    w2v("apply", recased_wim, out, "--index", "1", "--size", "2G", "--layout", "bios")
    raw = to_raw(out, tmp)
    ntfs = extract_partition(raw, sfdisk(raw)["partitions"][0], tmp, "n.img")
    root = run("ntfsls", "-a", ntfs).stdout.split()
    assert "BOOTNXT" in root and "bootmgr" in root, root
    boot = run("ntfsls", "-a", ntfs, "-p", "/Boot").stdout.split()
    assert not {n.lower() for n in boot} & {"bootnxt", "bootmgr"}, boot
    assert "BCD" in boot and "MemTest.EXE" in boot
    (tmp / "BCD").write_bytes(subprocess.run(["ntfscat", ntfs, "/Boot/BCD"], capture_output=True, check=True).stdout)
    assert "{b2721d73-1db4-4c62-bf78-c548a880142d}" in regipy_store(tmp / "BCD")  # {memdiag}
    attrs = run("ntfsinfo", "-F", "/BOOTNXT", ntfs).stdout
    assert "HIDDEN" in attrs and "SYSTEM" in attrs


def test_uefi_boot_files_whatever_their_case(recased_wim, tmp):
    """mdir (mtools) lists the ESP: the fallback loader is the image's BootMgFw.EFI, memtest is found."""
    out = tmp / "u.vhdx"
    w2v("apply", recased_wim, out, "--index", "1", "--size", "2G")
    raw = to_raw(out, tmp)
    a = esp_file(raw, "/EFI/Boot/bootx64.efi", tmp / "a")
    b = esp_file(raw, "/EFI/Microsoft/Boot/bootmgfw.efi", tmp / "b")
    assert a.read_bytes() == b.read_bytes()
    store = regipy_store(esp_file(raw, "/EFI/Microsoft/Boot/BCD", tmp / "BCD"))
    assert "{b2721d73-1db4-4c62-bf78-c548a880142d}" in store  # {memdiag}


# -- the boot manager's locale: the image's default language -------------------------------------------
@pytest.fixture
def german_wim(fixture_wim, tmp):
    """The fixture WIM with image 1's default language set to de-DE by wimlib-imagex (not by us)."""
    import shutil
    wim = tmp / "de.wim"
    shutil.copyfile(fixture_wim, wim)
    run("wimlib-imagex", "info", wim, "1", "--image-property", "WINDOWS/LANGUAGES/DEFAULT=de-DE")
    return wim


def store_locales(disk, tmp):
    raw = to_raw(disk, tmp)
    store = regipy_store(esp_file(raw, "/EFI/Microsoft/Boot/BCD", tmp / f"{disk.name}.BCD"))
    bootmgr = store["{9dea862c-5cdd-4e70-acc1-f32b344d4795}"]["elements"]
    (loader,) = loaders(store).values()
    memdiag = store["{b2721d73-1db4-4c62-bf78-c548a880142d}"]["elements"]
    return {bootmgr["12000005"][1], loader["elements"]["12000005"][1], memdiag["12000005"][1]}


def test_locale_is_the_images_default_language(german_wim, tmp):
    info = json.loads(w2v("info", german_wim, "--json").stdout)["images"]
    assert [i["language"] for i in info] == ["de-DE", "en-US"]
    out = tmp / "de.vhdx"
    res = json.loads(w2v("apply", german_wim, out, "--index", "1", "--size", "2G", "--json").stdout)
    assert res["boot"]["locale"] == "de-DE" and res["image"]["language"] == "de-DE"
    assert store_locales(out, tmp) == {"de-DE"}
    # --locale still wins
    out2 = tmp / "fr.vhdx"
    w2v("apply", german_wim, out2, "--index", "1", "--size", "2G", "--locale", "fr-FR")
    assert store_locales(out2, tmp) == {"fr-FR"}


def test_locale_of_an_image_without_a_language_is_en_us(german_wim, tmp):
    run("wimlib-imagex", "info", german_wim, "2", "--image-property", "WINDOWS/LANGUAGES/DEFAULT=")
    assert json.loads(w2v("info", german_wim, "--json").stdout)["images"][1]["language"] is None
    out = tmp / "en.vhdx"
    w2v("apply", german_wim, out, "--index", "2", "--size", "2G")
    assert store_locales(out, tmp) == {"en-US"}


def test_bad_locale_is_refused(fixture_wim, tmp):
    from tests.support import fails
    fails(["apply", fixture_wim, tmp / "o.vhdx", "--index", "1", "--locale", "de DE"], 2,
          "--locale must be a language tag", tmp, str(tmp / "o.vhdx"))
