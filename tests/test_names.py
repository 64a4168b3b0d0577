"""--name as Convert-WindowsImage's -Edition takes it: without regard to case, and a unique part of a
name or display name is enough.  The WIM's names are set by wimlib-imagex (export, info), not by us."""
import shutil

import pytest

from tests.support import fails, run


@pytest.fixture
def three(fixture_wim, tmp):
    """Images 1 'Windows 10 Pro', 2 'Windows 10 Enterprise', 3 'Windows 10 Pro N' (display name
    'Windows 10 Pro N for Workstations')."""
    wim = tmp / "three.wim"
    shutil.copyfile(fixture_wim, wim)
    run("wimlib-imagex", "export", fixture_wim, "1", wim, "Windows 10 Pro N")
    run("wimlib-imagex", "info", wim, "3", "--image-property", "DISPLAYNAME=Windows 10 Pro N for Workstations")
    return wim


@pytest.mark.parametrize("name,index", [
    ("Windows 10 Pro", 1),                 # exactly a name, though "Windows 10 Pro N" holds it too
    ("windows 10 PRO", 1),                 # any case
    ("enterprise", 2),                     # a part of one name only
    ("Pro N", 3),
    ("workstations", 3),                   # a part of a display name
    ("WINDOWS 10 PRO N FOR WORKSTATIONS", 3),
])
def test_names_that_pick_one_image(three, name, index):
    from wim2vhd.wim import Wim
    with Wim(str(three)) as w:
        assert w.resolve(None, name) == index


def test_ambiguous_and_unknown_names_are_refused_listing_the_images(three, tmp):
    out = tmp / "o.vhdx"
    fails(["apply", three, out, "--name", "pro"], 2, "--name 'pro' matches images 1 ('Windows 10 Pro'), "
          "3 ('Windows 10 Pro N')", tmp, out)
    fails(["apply", three, out, "--name", "pro"], 2, "3: 'Windows 10 Pro N' ('Windows 10 Pro N for Workstations')",
          tmp, out)
    fails(["apply", three, out, "--name", "Home"], 2, "no image whose name or display name holds 'Home'; images: "
          "1: 'Windows 10 Pro'; 2: 'Windows 10 Enterprise'", tmp, out)
    fails(["apply", three, out, "--name", "  "], 2, "--name must not be empty", tmp, out)
