import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W2V = os.path.join(os.path.dirname(sys.executable), "wim2vhd")


def run(*args, check=True, **kw):
    """Run a command, return CompletedProcess with text output."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}): {p.stderr}\n{p.stdout}")
    return p


def w2v(*args, check=True, **kw):
    """Run the installed wim2vhd console script."""
    return run(W2V, *args, check=check, **kw)


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def leftovers(directory):
    """Temporary files wim2vhd may have left behind."""
    return [n for n in os.listdir(directory) if ".w2v-tmp" in n]


def have(tool):
    return shutil.which(tool) is not None
