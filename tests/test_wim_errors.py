"""wimlib's errors as wim2vhd's: one table (wim2vhd/wim.py) of the codes native/cdefs/10_wimlib.h names,
damaged WIM headers and XML as bad inputs (exit 3) in one line, and errors in an ISO's WIM naming the ISO."""
import struct

import pytest

from tests.support import leftovers, w2v

XML_RESHDR = 72      # the WIM header's resource header of the XML data
LOOKUP_RESHDR = 48   # ... of the lookup table


def reshdr(data, off):
    """(size in the file, flags, offset, original size) of the resource header at `off`."""
    return (int.from_bytes(data[off:off + 7], "little"), data[off + 7], *struct.unpack_from("<QQ", data, off + 8))


def damaged(fixture_wim, tmp, name, change) -> str:
    data = bytearray(open(fixture_wim, "rb").read())
    change(data)
    p = tmp / name
    p.write_bytes(bytes(data))
    return str(p)


def bad_xml(data):
    _, flags, off, _ = reshdr(data, XML_RESHDR)
    assert flags & 2 == 2  # metadata, uncompressed: the XML data is in the file as UTF-16LE text
    data[off + 40:off + 60] = "</x>&&#<>".encode("utf-16-le")[:20]


def huge(where):
    def change(data):
        data[where + 16:where + 24] = b"\xff" * 8  # the original size: 2^64-1
    return change


@pytest.mark.parametrize("name,change", [("xml.wim", bad_xml), ("xml-size.wim", huge(XML_RESHDR)),
                                         ("table-size.wim", huge(LOOKUP_RESHDR))])
def test_damaged_header_or_xml_is_a_bad_input_in_one_line(fixture_wim, tmp, name, change):
    """libxml2 printed 7 to 25 lines before wimlib's (exit 5); a 2^64-1 size was 'Ran out of memory' (exit 5)."""
    wim = damaged(fixture_wim, tmp, name, change)
    for args in (["info", wim], ["apply", wim, tmp / "o.vhdx", "--index", "1", "--size", "2G"]):
        p = w2v(*args, check=False)
        assert p.returncode == 3, p.stderr
        assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("wim2vhd: error: "), p.stderr
        assert name in p.stderr and "damaged" in p.stderr and "parser error" not in p.stderr
    assert not (tmp / "o.vhdx").exists() and leftovers(tmp) == []


def test_error_in_an_iso_names_the_iso(fixture_wim, tmp):
    from tests.test_sources import udf_iso
    data = bytearray(open(fixture_wim, "rb").read())
    bad_xml(data)
    src = udf_iso(tmp / "win.iso", {"sources/install.wim": bytes(data)})
    for args in (["info", src], ["apply", src, tmp / "o.vhdx", "--index", "1", "--size", "2G"]):
        p = w2v(*args, check=False)
        assert p.returncode == 3 and len(p.stderr.splitlines()) == 1, p.stderr
        assert str(src) in p.stderr and "\\sources\\install.wim" in p.stderr, p.stderr
        assert ".w2v-tmp" not in p.stderr, p.stderr
    assert leftovers(tmp) == []


def test_one_table_of_wimlib_codes():
    """The names in native/cdefs are wimlib's own codes (checked against wimlib's own message for
    each), and the table maps them; no code is written as a number in wim.py."""
    import os
    import re

    from wim2vhd.wim import wimlib as wim
    from wim2vhd._lib import ffi, lib
    from wim2vhd.errors import (CorruptInput, EnvironmentFault, ImageNotFound, InternalError, UnsupportedInput,
                                UsageError)
    said = {
        "WIMLIB_ERR_XML": "The XML data of the WIM is invalid",
        "WIMLIB_ERR_WIM_IS_READONLY": "read-only",
        "WIMLIB_ERR_NTFS_3G": "NTFS-3G encountered an error",
        "WIMLIB_ERR_NOMEM": "Ran out of memory",
        "WIMLIB_ERR_WRITE": "Failed to write data",
    }
    for name, text in said.items():
        assert text in ffi.string(lib.wimlib_get_error_string(getattr(lib, name))).decode(), name
    codes = [getattr(lib, n) for n in dir(lib) if n.startswith("WIMLIB_ERR_")]
    assert len(codes) == len(set(codes)) > 70
    for code, cls in ((lib.WIMLIB_ERR_XML, CorruptInput), (lib.WIMLIB_ERR_INVALID_HEADER, CorruptInput),
                      (lib.WIMLIB_ERR_IMAGE_COUNT, CorruptInput), (lib.WIMLIB_ERR_INVALID_IMAGE, ImageNotFound),
                      (lib.WIMLIB_ERR_WIM_IS_READONLY, UnsupportedInput), (lib.WIMLIB_ERR_INVALID_PARAM, InternalError),
                      (lib.WIMLIB_ERR_IMAGE_NAME_COLLISION, UsageError), (lib.WIMLIB_ERR_MQUEUE, EnvironmentFault)):
        with pytest.raises(cls) as e:
            wim._check(code, "x.wim")
        assert type(e.value) is cls and str(e.value).startswith("x.wim: ")
    stages = {lib.WIMLIB_PROGRESS_MSG_EXTRACT_STREAMS: "apply", lib.WIMLIB_PROGRESS_MSG_WRITE_STREAMS: "write"}
    assert all(wim._MSG_STAGE[k] == v for k, v in stages.items())
    src = open(wim.__file__).read()
    assert not re.search(r"(==|!=|in \(|setdefault\()\s*\d{2}\b", src), "a wimlib code written as a number"
