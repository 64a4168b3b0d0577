"""Native VHD boot in one command: apply --layout native --host-bcd STORE --vhd-path ... makes the disk and
adds its boot entry to the host's store, as `bcd add-vhd` does.

The host stores are copies of real Windows stores (/work/shared/reference/bcd: windeploy-BCD-efi, made by
Windows' bcdboot) and one `bcd create` made; the entries are read back with regipy (nobody here wrote it)
and with `wim2vhd bcd show`, and compared with what `bcd add-vhd` writes for the same volume and path
(tests/test_bcd_cli.py checks those bytes against bcdedit's)."""
import json
import os
import shutil

import pytest

from tests.support import leftovers, ref_copy, regipy_store, sha, w2v

NATIVE = ["--index", "1", "--size", "1G", "--layout", "native", "--seed", "host-bcd"]
BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
DEVICE, OSDEVICE, DESCRIPTION = "11000001", "21000001", "12000004"


def entry_elements(store, guid):
    return regipy_store(store)[guid.lower()]["elements"]


@pytest.mark.parametrize("host", [["--host-mbr", "0x36234da4:0x100000"],
                                  ["--host-gpt", "984c884b-4218-4f07-aa93-5ede4c7c5384:"
                                                 "76cc3abd-2782-4839-af5c-5fc8e6659147"],
                                  []])
def test_apply_adds_the_disk_to_the_host_store(fixture_wim, tmp, host):
    store = ref_copy("windeploy-BCD-efi", tmp)
    before = store.read_bytes()
    out = tmp / "win.vhdx"
    res = json.loads(w2v("apply", fixture_wim, out, *NATIVE, "--host-bcd", store, "--vhd-path", "\\vhds\\win.vhdx",
                         *host, "--json").stdout)
    assert out.exists() and not leftovers(tmp)
    h = res["host_bcd"]
    assert h["store"] == str(store) and h["backup"] == str(store) + ".bak"
    assert (tmp / "windeploy-BCD-efi.bak").read_bytes() == before, "the old store is kept as it was"
    # regipy reads the new entry: a Windows Boot Loader named after the image, in {bootmgr}'s menu
    s = regipy_store(store)
    guid = h["id"].lower()
    assert s[guid]["type"] == 0x10200003
    assert s[guid]["elements"][DESCRIPTION] == ("REG_SZ", res["image"]["name"])
    assert guid in [g.lower() for g in s[BOOTMGR]["elements"]["24000001"][1]]
    # every other object is as it was
    old = regipy_store(tmp / "windeploy-BCD-efi.bak")
    assert {k: v for k, v in s.items() if k not in (guid, (h["resume"] or "").lower(), BOOTMGR)} == \
        {k: v for k, v in old.items() if k != BOOTMGR}
    # the same devices as `bcd add-vhd` writes for this volume and path
    twin = tmp / "twin"
    shutil.copyfile(tmp / "windeploy-BCD-efi.bak", twin)
    other = w2v("bcd", "add-vhd", twin, "--vhd-path", "\\vhds\\win.vhdx", *host).stdout.strip()
    theirs = entry_elements(twin, other)
    for e in (DEVICE, OSDEVICE, "12000002", "22000002"):
        assert s[guid]["elements"][e] == theirs[e], e
    shown = w2v("bcd", "show", store).stdout
    assert f"description             {res['image']['name']}\n" in shown
    assert h["device"] in shown and "\\vhds\\win.vhdx" in h["device"]


def test_apply_to_a_store_bcd_create_made(fixture_wim, tmp):
    store = tmp / "BCD"
    w2v("bcd", "create", store)
    p = w2v("apply", fixture_wim, tmp / "n.vhd", *NATIVE, "--type", "fixed", "--host-bcd", store,
            "--vhd-path", "/vhds/n.vhd", "--host-mbr", "0x1234:1048576")
    assert "added to " + str(store) in p.stdout
    info = json.loads(w2v("bcd", "show", store, "--json").stdout)
    loaders = [o for o in info["objects"] if o["title"] == "Windows Boot Loader"]
    assert len(loaders) == 1
    lines = {e["name"]: e["lines"] for e in loaders[0]["elements"]}
    assert lines["device"] == lines["osdevice"] == ["vhd=[mbr:0x00001234:0x100000]\\vhds\\n.vhd"], lines
    assert lines["path"] == ["\\Windows\\system32\\winload.efi"]


def _refused(args, tmp, code, words, store=None):
    out = tmp / "o.vhdx"
    before = store.read_bytes() if store is not None and store.is_file() else None
    p = w2v("apply", *args, check=False)
    assert p.returncode == code, p.stdout + p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], p.stderr
    assert not out.exists() and not leftovers(tmp), "no disk is written"
    if before is not None:
        assert store.read_bytes() == before and not os.path.exists(str(store) + ".bak")


def test_bad_stores_and_options_are_refused_before_any_disk(fixture_wim, tmp):
    out = tmp / "o.vhdx"
    vp = ["--vhd-path", "\\vhds\\o.vhdx"]
    base = [fixture_wim, out, *NATIVE]
    _refused([*base, "--host-bcd", tmp / "missing", *vp], tmp, 3, "does not exist")
    junk = tmp / "junk"
    junk.write_bytes(os.urandom(8192))
    _refused([*base, "--host-bcd", junk, *vp], tmp, 3, str(junk), junk)
    # a BCD store without a boot manager to list the entry in (a hive, but not a system store)
    nomgr = tmp / "nomgr"
    w2v("bcd", "create", nomgr)
    from wim2vhd.boot.store import BcdStore
    from wim2vhd.boot import elements as el
    with BcdStore.open(nomgr, write=True) as s:
        s.delete_object(el.BOOTMGR)
        s.save(nomgr, overwrite=True, backup=False)
    _refused([*base, "--host-bcd", nomgr, *vp], tmp, 3, "no Windows Boot Manager", nomgr)
    good = tmp / "BCD"
    w2v("bcd", "create", good)
    for args, code, words in [
        (["--host-bcd", good], 2, "needs --vhd-path"),
        ([*vp], 2, "go with --host-bcd"),
        (["--host-mbr", "1:2"], 2, "go with --host-bcd"),
        (["--host-bcd", good, *vp, "--layout", "uefi"], 2, "--layout native"),
        (["--host-bcd", good, "--vhd-path", "\\vhds\\o.vhd"], 2, "must name a .vhdx file"),
        (["--host-bcd", good, "--vhd-path", "C:\\vhds\\o.vhdx"], 2, "must not name a drive"),
        (["--host-bcd", good, *vp, "--host-mbr", "zz:1"], 2, "not a number"),
        (["--host-bcd", good, *vp, "--host-mbr", "1:2", "--host-gpt", "a:b"], 2, "only one"),
    ]:
        _refused([*base, *args], tmp, code, words, good)
    _refused([fixture_wim, tmp / "o-{index}.vhdx", "--index", "all", "--size", "1G", "--layout", "native",
              "--host-bcd", good, *vp], tmp, 2, "apply one image", good)
    _refused([fixture_wim, tmp / "o.img", *NATIVE, "--host-bcd", good, "--vhd-path", "\\o.img"], tmp, 2,
             "needs a .vhd or .vhdx", good)


def test_a_store_in_a_folder_the_user_cannot_write(fixture_wim, tmp, nobody):
    """As nobody, a store in root's folder: refused before the disk (exit 4), as the edit would be."""
    esp = os.path.join(nobody.dir, "esp")
    os.mkdir(esp, 0o755)
    store = os.path.join(esp, "BCD")
    w2v("bcd", "create", store)
    os.chmod(store, 0o644)
    before = sha(store)
    wim = nobody.put(fixture_wim)
    out = os.path.join(nobody.dir, "o.vhdx")
    p = nobody("apply", wim, out, *NATIVE, "--host-bcd", store, "--vhd-path", "\\o.vhdx")
    assert p.returncode == 4, p.stdout + p.stderr
    assert f"cannot write in {esp}" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not os.path.exists(out) and not leftovers(nobody.dir) and sha(store) == before


def test_a_failed_store_edit_keeps_the_disk_and_says_so(fixture_wim, tmp, fault_shim):
    """The store's replacement fails (its temporary file's writes fail with EIO: tests/faults shim)
    after the disk is complete: exit 4, one line naming the disk and the store, the disk stays, the
    store is as it was."""
    store = tmp / "BCD"
    w2v("bcd", "create", store)
    before = sha(store)
    out = tmp / "done.vhdx"
    from tests.support import W2V
    r = fault_shim.run([W2V, "apply", fixture_wim, out, *NATIVE, "--host-bcd", store, "--vhd-path", "\\done.vhdx"],
                       prefix=str(tmp / ".BCD."), after=0, errno="EIO")
    assert r.failed and r.proc.returncode == 4, r.proc.stdout + r.proc.stderr
    assert len(r.errors) == 1, r.errors
    line = r.errors[0]
    assert f"{out} is complete, but its boot entry could not be added to {store}" in line, line
    assert "wim2vhd bcd add-vhd" in line
    assert out.exists() and sha(store) == before and not leftovers(tmp)
    w2v("verify", out)
