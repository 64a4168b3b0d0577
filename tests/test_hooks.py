"""The native hooks say whether they work (wim2vhd/hooks.py, native/w2v_got.c).

`--version --json` lists each hook, read back from the libraries' GOTs; the sonames it names are
checked against the extension's DT_NEEDED entries as readelf reads them, and wimlib's running
version against wimlib-imagex's own.  W2V_NO_HOOKS=1 turns every hook off, and apply and capture
still round-trip the fixture's metadata (read back with wimlib's wimdir, from wimlib's own
wimcapture of the partition as well as ours).  W2V_TEST_HOOK_FAIL=<symbol> (a test-only switch)
fails one hook, to show that a group is undone as a whole and that the cost is said once."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from fixtures.wimdir import wimdir_detailed
from tests.support import assert_same_tree, ntfs_partition, run, w2v

HOOKS = {"readahead": ("libwim.so.", ["wimlib_create_decompressor", "wimlib_free_decompressor", "wimlib_decompress"]),
         "read-window": ("libwim.so.", ["pread64"]),
         "compact-allocation": ("libntfs-3g.so.", ["ntfs_cluster_alloc"]),
         "clock": ("libntfs-3g.so.", ["clock_gettime"]),
         "iso-in-place": ("libwim.so.", ["open64", "realpath", "read", "pread64", "lseek64", "close", "fstat64"])}


def env(**kw):
    e = {k: v for k, v in os.environ.items() if k not in ("W2V_NO_HOOKS", "W2V_TEST_HOOK_FAIL")}
    e.update(kw)
    return e


def version_json(**kw):
    p = w2v("--version", "--json", env=env(**kw))
    assert p.stderr == ""
    return json.loads(p.stdout)


def by_name(v):
    return {h["name"]: h for h in v["hooks"]}


def cost_lines(stderr):
    return [line for line in stderr.splitlines() if "hook could not be installed" in line]


def test_version_json_lists_every_hook_installed():
    v = version_json()
    hooks = by_name(v)
    assert set(hooks) == set(HOOKS)
    for name, (lib, symbols) in HOOKS.items():
        h = hooks[name]
        assert h["library"].startswith(lib) and h["symbols"] == symbols, h
        assert h["installed"] and h["reason"] is None, h
        # read back from the GOT; libwim's pread64 slot is shared: the read window, installed after the
        # ISO views, holds it and passes view reads on to them (native/w2v_readahead.c)
        shared = 1 if name == "iso-in-place" else 0
        assert h["slots"] == len(symbols) and h["patched"] == len(symbols) - shared, h


def test_libraries_by_their_exact_soname():
    """The sonames hooked are the very ones the extension was linked against (readelf -d, DT_NEEDED)."""
    import wim2vhd._native as native
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", run("readelf", "-d", native.__file__).stdout))
    v = version_json()
    libs = {lb["name"]: lb for lb in v["libraries"]}
    assert set(libs) == {"wimlib", "libntfs-3g", "hivex"}
    for lb in libs.values():
        assert lb["soname"] in needed, (lb, needed)
        assert lb["path"] and os.path.exists(lb["path"]) and os.path.basename(lb["path"]) == lb["soname"], lb
    assert {h["library"] for h in v["hooks"]} <= needed
    # wimlib says which version it is; the package manager says which package holds the file
    assert libs["wimlib"]["version"] == libs["wimlib"]["built_against"]  # as built here
    if shutil.which("dpkg-query"):
        for lb in libs.values():
            pkg = run("dpkg", "-S", f"*/{lb['soname']}").stdout.split(":")[0]
            ver = run("dpkg-query", "-W", "-f", "${Version}", pkg).stdout
            assert re.match(rf"(\d+:)?{re.escape(lb['version'] or lb['built_against'])}-", ver), (lb, ver)
    assert v["version"] == w2v("--version").stdout.split()[1]


def test_no_hooks_turns_every_hook_off():
    v = version_json(W2V_NO_HOOKS="1")
    for h in v["hooks"]:
        assert not h["installed"] and h["reason"] == "W2V_NO_HOOKS" and h["patched"] == 0, h
    p = w2v("--version", env=env(W2V_NO_HOOKS="1"))
    assert p.stdout.splitlines() == [f"wim2vhd {v['version']}", "hooks: all off (W2V_NO_HOOKS)"]
    # "0" means not set
    assert all(h["installed"] for h in version_json(W2V_NO_HOOKS="0")["hooks"])


@pytest.mark.parametrize("failing", ["wimlib_create_decompressor", "wimlib_free_decompressor", "wimlib_decompress"])
def test_a_group_is_installed_whole_or_not_at_all(failing):
    """When one of readahead's three slots cannot be patched, those patched before it are put back:
    none of the three leads to our functions afterwards (each slot read back from libwim's GOT)."""
    hooks = by_name(version_json(W2V_TEST_HOOK_FAIL=failing))
    ra = hooks["readahead"]
    assert not ra["installed"] and ra["reason"] == f"W2V_TEST_HOOK_FAIL={failing}", ra
    assert ra["slots"] == 3 and ra["patched"] == 0, ra
    assert not hooks["read-window"]["installed"] and hooks["read-window"]["reason"] == "it needs the readahead hook"
    assert hooks["read-window"]["patched"] == 0
    assert hooks["compact-allocation"]["installed"] and hooks["clock"]["installed"]


def test_plain_version_names_a_missing_hook():
    p = w2v("--version", env=env(W2V_TEST_HOOK_FAIL="ntfs_cluster_alloc"))
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("hook compact-allocation: not installed in libntfs-3g.so."), lines
    assert "dynamic disks will be 2 to 2.5 times larger" in lines[1]


@pytest.mark.parametrize("failing,args,hook,cost", [
    ("ntfs_cluster_alloc", [], "compact-allocation", "dynamic disks will be 2 to 2.5 times larger"),
    ("wimlib_decompress", [], "readahead", "apply will be slower"),
    ("clock_gettime", ["--seed", "s"], "clock", "the NTFS volume is not"),
])
def test_a_missing_hook_is_said_once(fixture_wim, tmp, failing, args, hook, cost):
    """Two images applied in one process ask for the hook twice (or more): one line on stderr."""
    out = tmp / "w-{index}.vhdx"
    p = w2v("apply", fixture_wim, out, "--index", "1,2", "--size", "1G", "--layout", "native", "--no-boot", *args,
            env=env(W2V_TEST_HOOK_FAIL=failing))
    lines = cost_lines(p.stderr)
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"wim2vhd: the {hook} hook could not be installed in {HOOKS[hook][0]}"), lines
    assert f"(W2V_TEST_HOOK_FAIL={failing}): " in lines[0] and cost in lines[0], lines
    for i in (1, 2):
        img = ntfs_partition(tmp / f"w-{i}.vhdx", tmp)
        assert "processed successfully" in run("ntfsfix", "-n", img).stdout


def test_round_trip_without_hooks(fixture_wim, tmp):
    """W2V_NO_HOOKS=1: apply to a dynamic VHDX, then capture with wim2vhd and with wimlib's own
    wimcapture from the partition; wimdir --detailed of each matches the source image."""
    e = env(W2V_NO_HOOKS="1")
    out = tmp / "nh.vhdx"
    p = w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "native", "--no-boot", "--seed", "nh", env=e)
    assert cost_lines(p.stderr) == [] and "hook" not in p.stderr, p.stderr  # asked for: not warned about
    p = w2v("capture", out, tmp / "ours.wim", "--name", "ours", env=e)
    assert "hook" not in p.stderr, p.stderr
    src = wimdir_detailed(fixture_wim, 1)
    assert_same_tree(src, wimdir_detailed(str(tmp / "ours.wim"), 1))
    part = ntfs_partition(out, tmp)
    assert "processed successfully" in run("ntfsfix", "-n", part).stdout
    run("wimcapture", part, tmp / "theirs.wim", "theirs")  # wimlib's own capture, NTFS-3G mode
    assert_same_tree(src, wimdir_detailed(str(tmp / "theirs.wim"), 1))
