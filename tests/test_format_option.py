"""-f/--format (issue 12): the format a command reads or writes, named instead of taken from the
extension or the content.

Outside readers: qemu-img info -f (vpc for VHD, vhdx, qcow2) and qemu-img check -f (vhdx, qcow2) read what each
command wrote under a name of another format; vhdiinfo (libvhdi) reads the VHD and VHDX ones too;
wimlib-imagex reads the WIM captured from a disk named by -f.  A file of another format than -f
names is refused (exit 3) and left as it was; -f meant as --force (its short form until now) is a
usage error that says -f is --format now."""
import json
import os
import re

import pytest

from tests.support import leftovers, run, sha, w2v

QEMU = {"vhd": "vpc", "vhdx": "vhdx", "qcow2": "qcow2", "raw": "raw"}
ODD_NAME = {"vhd": "d.img", "vhdx": "d.qcow2", "qcow2": "d.vhdx", "raw": "d.vhd"}  # each named like another


def qemu_format(path, fmt):
    """qemu-img info of path read as fmt (it fails when the file is not one), and qemu-img check where
    qemu checks the format (vhdx and qcow2; it has no check of vpc or raw)."""
    info = json.loads(run("qemu-img", "info", "--output=json", "-f", QEMU[fmt], path).stdout)
    if fmt in ("vhdx", "qcow2"):
        run("qemu-img", "check", "-f", QEMU[fmt], path)
    return info


def vhdi_says(path, fmt):
    """vhdiinfo's (libvhdi's) facts of a VHD or VHDX: its format line and the rest, as one string."""
    out = run("vhdiinfo", path).stdout
    want = {"vhd": "VHD (version 1)", "vhdx": "VHDX (version 2)"}[fmt]
    assert re.search(rf"Format\s*: {re.escape(want)}", out), out
    return out


@pytest.mark.parametrize("fmt", ["vhd", "vhdx", "qcow2", "raw"])
def test_disk_create_format_wins_over_the_extension(tmp, fmt):
    out = tmp / ODD_NAME[fmt]
    res = json.loads(w2v("disk", "create", "-f", fmt.upper() if fmt == "vhdx" else fmt, out, "--size", "64M",
                         "--json").stdout)
    assert res["format"] == fmt and res["path"] == str(out)
    info = qemu_format(out, fmt)
    assert info["virtual-size"] == 64 << 20 and info["format"] == QEMU[fmt]
    if fmt in ("vhd", "vhdx"):
        vhdi_says(out, fmt)


def test_disk_create_with_format_and_no_extension(tmp):
    w2v("disk", "create", "--format", "qcow2", tmp / "disk", "--size", "64M")
    assert qemu_format(tmp / "disk", "qcow2")["virtual-size"] == 64 << 20


@pytest.mark.parametrize("fmt", ["vhdx", "qcow2"])
def test_disk_diff_child_format(tmp, fmt):
    parent = tmp / "p.vhdx"
    w2v("disk", "create", parent, "--size", "64M")
    child = tmp / "c.img"
    res = json.loads(w2v("disk", "diff", "-f", fmt, parent, child, "--json").stdout)
    assert res["format"] == fmt and res["type"] == "differencing"
    if fmt == "qcow2":
        info = qemu_format(child, fmt)
        assert info["backing-filename"] == "p.vhdx" and info["backing-filename-format"] == "vhdx"
    else:  # (qemu opens no VHDX child: "Operation not supported")
        assert re.search(r"Disk type\s*: Differential", vhdi_says(child, "vhdx"))


def test_disk_diff_format_other_than_the_parents_is_refused(tmp):
    parent = tmp / "p.vhdx"
    w2v("disk", "create", parent, "--size", "64M")
    p = w2v("disk", "diff", "-f", "vhd", parent, tmp / "c.vhd", check=False)
    assert p.returncode == 2 and "parent's format (vhdx)" in p.stderr and "-f vhdx" in p.stderr, p.stderr
    assert sorted(x.name for x in tmp.iterdir()) == ["p.vhdx"]


def test_disk_convert_both_formats(tmp):
    src = tmp / "s.bin"  # a VHDX named like a raw image
    w2v("disk", "create", "-f", "vhdx", src, "--size", "64M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 1M 64k", src)
    out = tmp / "o.vhdx"
    w2v("disk", "convert", "--source-format", "vhdx", src, "-f", "vhd", out)
    assert qemu_format(out, "vhd")["format"] == "vpc"
    vhdi_says(out, "vhd")
    run("qemu-io", "-f", "vpc", "-c", "read -P 0x5a 1M 64k", out)  # the data, read back by qemu
    p = w2v("disk", "convert", "-F", "qcow2", src, tmp / "x.vhdx", check=False)
    assert p.returncode == 3 and "is not a qcow2 file: it looks like a VHDX disk" in p.stderr, p.stderr
    assert "-F vhdx" in p.stderr and not (tmp / "x.vhdx").exists() and not leftovers(tmp)


@pytest.fixture
def vhdx_named_img(tmp):
    d = tmp / "d.img"
    w2v("disk", "create", "-f", "vhdx", d, "--size", "64M")
    return d


@pytest.mark.parametrize("cmd", [["disk", "info"], ["disk", "check"], ["verify"]])
def test_readers_refuse_another_format(tmp, vhdx_named_img, cmd):
    before = sha(vhdx_named_img)
    for wrong, looks in (("vhd", "a VHDX disk"), ("QCOW2", "a VHDX disk")):
        p = w2v(*cmd, "-f", wrong, vhdx_named_img, check=False)
        assert p.returncode == 3, (cmd, p.stderr)
        assert p.stderr.count("\n") == 1 and f"is not a {'VHD' if wrong == 'vhd' else 'qcow2'} file" in p.stderr
        assert f"it looks like {looks}" in p.stderr and "-f vhdx" in p.stderr, p.stderr
    assert sha(vhdx_named_img) == before


def test_readers_read_the_format_named(tmp, vhdx_named_img):
    info = json.loads(w2v("disk", "info", "-f", "vhdx", vhdx_named_img, "--json").stdout)
    assert info["format"] == "vhdx" and info["virtual_size"] == 64 << 20
    assert "sound (vhdx dynamic)" in w2v("disk", "check", "-f", "VHDX", vhdx_named_img).stdout
    # raw takes any file as its bytes, as qemu-img -f raw does: here the VHDX file itself
    raw = json.loads(w2v("disk", "info", "-f", "raw", vhdx_named_img, "--json").stdout)
    assert raw["format"] == "raw" and raw["virtual_size"] == vhdx_named_img.stat().st_size
    assert qemu_format(vhdx_named_img, "raw")["virtual-size"] == raw["virtual_size"]


def test_a_raw_file_read_as_vhd_is_refused(tmp):
    raw = tmp / "r.vhd"
    raw.write_bytes(b"\0" * (1 << 20))
    p = w2v("disk", "info", "-f", "vhd", raw, check=False)
    assert p.returncode == 3 and "it looks like a raw image (no disk signature)" in p.stderr, p.stderr
    # disk check takes -f as it takes an extension: the file is checked as a VHD, and damaged
    p = w2v("disk", "check", "-f", "vhd", tmp / "r.vhd", check=False)
    assert p.returncode == 3 and "damaged" in p.stderr, p.stderr


# -- apply, capture and verify with the fixture WIM (one apply) --------------------------------------

def test_apply_capture_verify_with_format(fixture_wim, tmp):
    out = tmp / "win.img"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "1", "--size", "3G", "-f", "vhdx",
                         "--json").stdout)
    assert res["disk"]["format"] == "vhdx"
    assert qemu_format(out, "vhdx")["virtual-size"] == 3 << 30
    vhdi_says(out, "vhdx")
    before = sha(out)
    # verify and capture read it as the VHDX it is
    assert w2v("verify", "-f", "vhdx", out).returncode == 0
    wim = tmp / "back.wim"
    w2v("capture", "-f", "vhdx", out, wim, "--name", "Back")
    assert "Back" in run("wimlib-imagex", "info", wim).stdout
    # and refuse it as another format
    for cmd in (["capture", "-f", "qcow2", out, tmp / "x.wim"], ["verify", "-f", "vhd", out]):
        p = w2v(*cmd, check=False)
        assert p.returncode == 3 and "it looks like a VHDX disk" in p.stderr, p.stderr
    assert not (tmp / "x.wim").exists() and sha(out) == before and not leftovers(tmp)


def test_apply_format_through_the_api(fixture_wim, tmp):
    from wim2vhd import api
    from wim2vhd.errors import UsageError
    with pytest.raises(UsageError, match="must be one of raw, vhd, vhdx, qcow2, not 'vpc'"):
        api.apply_image(fixture_wim, str(tmp / "w.vhd"), index=1, format="vpc")
    res = api.apply_image(fixture_wim, str(tmp / "w.disk"), index=1, size="3G", format="QCOW2", boot=False)
    assert res["disk"]["format"] == "qcow2"
    assert qemu_format(tmp / "w.disk", "qcow2")["virtual-size"] == 3 << 30


def test_api_keywords(tmp):
    from wim2vhd import api
    from wim2vhd.errors import CorruptInput
    api.disk_create(str(tmp / "a.raw"), "64M", format="vhd")
    assert qemu_format(tmp / "a.raw", "vhd")["format"] == "vpc"
    assert api.disk_info(str(tmp / "a.raw"), format="vhd")["format"] == "vhd"
    with pytest.raises(CorruptInput, match="looks like a VHD disk"):
        api.disk_info(str(tmp / "a.raw"), format="vhdx")
    api.disk_convert(str(tmp / "a.raw"), str(tmp / "b.vhd"), format="qcow2", source_format="vhd")
    assert qemu_format(tmp / "b.vhd", "qcow2")["format"] == "qcow2"
    assert api.disk_check(str(tmp / "b.vhd"), format="qcow2")["sound"]


# -- -f meant as --force -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv,what", [
    (["disk", "create", "-f", "{d}/o.vhdx", "--size", "64M"], "OUT"),       # -f takes OUT as its value
    (["disk", "create", "{d}/o.vhdx", "-f", "--size", "64M"], "OUT"),       # ... or the next option
    (["disk", "convert", "{d}/e.vhdx", "{d}/o.vhdx", "-f", "yes"], "OUT"),
    (["disk", "diff", "-f", "{d}/e.vhdx", "{d}/c.vhdx"], "CHILD"),
    (["apply", "-f", "x.wim", "{d}/o.vhdx"], "OUT"),
    (["capture", "-f", "{d}/e.vhdx", "{d}/o.wim"], "OUT"),
])
def test_f_with_a_path_says_f_is_format_now(tmp, argv, what):
    w2v("disk", "create", tmp / "e.vhdx", "--size", "64M")
    before = sha(tmp / "e.vhdx")
    p = w2v(*[a.format(d=tmp) for a in argv], check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"-f is --format now (raw, vhd, vhdx, qcow2); use --force to replace {what}" in p.stderr, p.stderr
    assert sorted(x.name for x in tmp.iterdir()) == ["e.vhdx"] and sha(tmp / "e.vhdx") == before


def test_f_at_the_end_and_force_elsewhere(tmp):
    p = w2v("disk", "create", tmp / "o.vhdx", "--size", "64M", "-f", check=False)
    assert p.returncode == 2 and "-f is --format now" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    p = w2v("bcd", "create", "-f", tmp / "BCD", check=False)
    assert p.returncode == 2 and "use --force to replace STORE" in p.stderr, p.stderr
    assert not list(tmp.iterdir())
    # --force keeps its long form
    w2v("disk", "create", tmp / "o.vhdx", "--size", "64M")
    w2v("disk", "create", tmp / "o.vhdx", "--size", "32M", "--force", "-f", "vhd")
    assert qemu_format(tmp / "o.vhdx", "vhd")["virtual-size"] == 32 << 20


def test_a_bad_format_name_is_a_usage_error(tmp):
    p = w2v("disk", "info", "--format", "vpc", tmp / "x", check=False)
    assert p.returncode == 2 and "must be one of raw, vhd, vhdx, qcow2, not 'vpc'" in p.stderr, p.stderr
    assert "--force" not in p.stderr  # disk info replaces nothing


# -- an unknown extension ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["disk", "create", "{o}", "--size", "64M"], ["disk", "convert", "{e}", "{o}"],
                                  ["disk", "diff", "{e}", "{o}"]])
def test_unknown_extension_names_the_formats_and_f(tmp, argv):
    w2v("disk", "create", tmp / "e.vhdx", "--size", "64M")
    o = tmp / "o.vdi"
    p = w2v(*[a.format(o=o, e=tmp / "e.vhdx") for a in argv], check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    for word in ("vhdx (.vhdx)", "vhd (.vhd)", "qcow2 (.qcow2)", "raw (.img, .raw, .bin)",
                 "-f/--format raw|vhd|vhdx|qcow2"):
        assert word in p.stderr, p.stderr
    assert not o.exists() and not leftovers(tmp)


def test_the_cli_lists_the_formats_the_drivers_have():
    from wim2vhd.cli._common import FORMAT_NAMES
    from wim2vhd.disk import FORMATS
    assert sorted(FORMAT_NAMES) == sorted(f.format_name for f in FORMATS)
    text = w2v("disk", "convert", "--help", env={**os.environ, "COLUMNS": "250", "TERM": "dumb"}).stdout
    assert "raw|vhd|vhdx|qcow2" in text and "--source-format" in text
