"""--debug: {dbgsettings} and `debug Yes` in the disk's store, read back with regipy (not ours) and
shown by `bcd show` as bcdedit shows them."""
import json
import os
import re
import struct

import pytest

from tests.support import fails, regipy_store, run, to_raw, w2v

DBGSETTINGS = "{4636856e-540f-4170-a130-a84776f4c654}"
BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
KEY = re.compile(r"[0-9a-z]{1,13}(\.[0-9a-z]{1,13}){3}")


def applied(wim, tmp, name, *args):
    out = tmp / name
    res = json.loads(w2v("apply", wim, out, "--index", "1", "--size", "2G", "--json", *args).stdout)
    raw = to_raw(out, tmp)
    bcd = tmp / (name + ".BCD")
    run("mcopy", "-n", "-i", f"{raw}@@1M", "::/EFI/Microsoft/Boot/BCD", bcd, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    os.unlink(raw)
    store = regipy_store(bcd)
    default = store[store[BOOTMGR]["elements"]["23000003"][1].lower()]["elements"]
    return res, store[DBGSETTINGS]["elements"], default, w2v("bcd", "show", bcd).stdout


def u64(b):
    assert len(b) == 8
    return struct.unpack("<Q", b)[0]


def test_serial(fixture_wim, tmp):
    res, dbg, default, show = applied(fixture_wim, tmp, "s.vhdx", "--debug", "serial:COM2:57600")
    assert set(dbg) == {"15000011", "15000013", "15000014"}
    assert (u64(dbg["15000011"][1]), u64(dbg["15000013"][1]), u64(dbg["15000014"][1])) == (0, 2, 57600)
    assert default["260000a0"][1] == b"\x01"
    for line in ("debugtype               Serial", "debugport               2", "baudrate                57600",
                 "debug                   Yes"):
        assert line in show.splitlines(), line
    assert res["boot"]["debug"]["port"] == 2


def test_net_without_a_key_makes_one_and_says_it(fixture_wim, tmp):
    res, dbg, default, show = applied(fixture_wim, tmp, "n.vhdx", "--debug", "net:10.0.0.1:50000", "--seed", "k1")
    key = res["boot"]["debug"]["key"]
    assert KEY.fullmatch(key) and all(int(w, 36) < 1 << 64 for w in key.split("."))
    assert set(dbg) == {"15000011", "1500001a", "1500001b", "1200001d"}
    assert u64(dbg["15000011"][1]) == 3 and u64(dbg["1500001b"][1]) == 50000
    assert dbg["1500001a"][1] == bytes([1, 0, 0, 10, 0, 0, 0, 0])   # 10.0.0.1, as Microsoft's tools write it
    assert dbg["1200001d"][1] == key
    assert default["260000a0"][1] == b"\x01"
    for line in ("debugtype               NET", "hostip                  10.0.0.1", "port                    50000",
                 f"key                     {key}"):
        assert line in show.splitlines(), line
    # the same seed, the same key; another seed, another; and the text summary prints it
    again = json.loads(w2v("apply", fixture_wim, tmp / "n2.vhdx", "--index", "1", "--size", "2G", "--json", "--debug",
                           "net:10.0.0.1:50000", "--seed", "k1").stdout)
    assert again["boot"]["debug"]["key"] == key
    text = w2v("apply", fixture_wim, tmp / "n3.vhdx", "--index", "1", "--size", "2G", "--debug",
               "net:10.0.0.1:50000", "--seed", "k2").stdout
    other = re.search(r"kernel debugger: net to 10\.0\.0\.1:50000, key (\S+)", text).group(1)
    assert KEY.fullmatch(other) and other != key


def test_net_with_a_key_and_local(fixture_wim, tmp):
    given = "2STEG4FZBJ2SZ.23onjirrsfnoh.1kkj5ntzt2gar.3dvr7xdirblqt"
    res, dbg, _, _ = applied(fixture_wim, tmp, "k.vhdx", "--debug", f"net:192.168.1.20:50001:{given}")
    assert dbg["1200001d"][1] == given.lower() and dbg["1500001a"][1][:4] == bytes([20, 1, 168, 192])
    res, dbg, default, show = applied(fixture_wim, tmp, "l.vhdx", "--debug", "local")
    # only the type: the template's serial port and baud rate are gone, as after bcdedit /dbgsettings local
    assert set(dbg) == {"15000011"} and u64(dbg["15000011"][1]) == 4
    assert "debugtype               Local" in show.splitlines() and default["260000a0"][1] == b"\x01"


def test_without_debug_the_loader_has_no_debug(fixture_wim, tmp):
    _, dbg, default, _ = applied(fixture_wim, tmp, "d.vhdx")
    assert "260000a0" not in default


@pytest.mark.parametrize("spec,words", [
    ("serial:COM0", "port must be a number from 1 to 255"),
    ("serial:1:1234", "baud rate must be one of"),
    ("net:1.2.3:5", "IPv4 address"),
    ("net:10.0.0.1:70000", "port must be a number from 1 to 65535"),
    ("net:10.0.0.1:5:not-a-key", "the key must be 4 words"),
    ("net:10.0.0.1", "net takes"),
    ("usb", "unknown debugger type 'usb'"),
])
def test_bad_debug_values(fixture_wim, tmp, spec, words):
    fails(["apply", fixture_wim, tmp / "o.vhdx", "--index", "1", "--debug", spec], 2, words, tmp, str(tmp / "o.vhdx"))


def test_debug_needs_a_store(fixture_wim, tmp):
    fails(["apply", fixture_wim, tmp / "o.vhdx", "--index", "1", "--layout", "native", "--debug", "local"], 2,
          "cannot go with --layout native", tmp, str(tmp / "o.vhdx"))


def test_parse_defaults():
    from wim2vhd.boot.debug import parse
    assert parse("serial").to_dict() | {"text": None} == {"type": "serial", "port": 1, "baudrate": 115200, "text": None}
    assert parse("Serial:3").port == 3 and parse("NETWORK:10.1.2.3:50000").host == "10.1.2.3"
    assert parse("LOCAL").type == "local"
