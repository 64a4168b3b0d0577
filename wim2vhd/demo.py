"""`make demo`: build the sample WIM from fixtures/, apply it to demo.vhdx, say how to boot it.

The sample image is Windows-shaped (boot files, hives, SDs, streams, links) but holds no
Windows: its boot manager is a probe (a GRUB EFI image) that reports on the serial port what
it finds, the BCD store on the ESP and the Windows partition.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    root = os.getcwd()
    sys.path.insert(0, root)
    try:
        from fixtures.build import build_fixture_wim
    except ImportError:
        print("run `make demo` from the wim2vhd source tree", file=sys.stderr)
        return 2
    from wim2vhd import api
    from wim2vhd.errors import Wim2VhdError

    out_dir = os.path.join(root, "demo")
    os.makedirs(out_dir, exist_ok=True)
    probes = {}
    try:
        from fixtures.probes import build_probes
        probes = build_probes(os.path.join(out_dir, "probes"))
    except Exception as e:  # the probes need grub-efi-amd64-bin; the demo works without them
        print(f"(no boot probes: {e})")
    wim = os.path.join(out_dir, "sample.wim")
    kw = {}
    if "bootmgfw.efi" in probes:
        kw["bootmgfw_efi"] = open(probes["bootmgfw.efi"], "rb").read()
    if "bootmgr" in probes:
        kw["bootmgr_pcat"] = open(probes["bootmgr"], "rb").read()
    build_fixture_wim(wim, **kw)
    print(f"sample WIM: {wim}")
    for i in api.image_info(wim)["images"]:
        print(f"  image {i['index']}: {i['name']} ({i['edition']}, {i['architecture']})")
    out = os.path.join(root, "demo.vhdx")
    try:
        res = api.apply_image(wim, out, index=1, size="4G", force=True)
    except Wim2VhdError as e:
        print(f"wim2vhd: error: {e}", file=sys.stderr)
        return e.exit_code
    st = res["stages"]
    print(f"applied image 1 to {out}: {res['disk']['format']} {res['disk']['type']}, "
          f"{res['disk']['file_size'] / (1 << 20):.1f} MiB file for a {res['disk']['virtual_size'] >> 30} GiB disk")
    print("  stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in st.items()))
    print()
    print("Boot it in QEMU (UEFI, OVMF; the probe prints what it finds on the serial console):")
    print("  cp /usr/share/OVMF/OVMF_VARS_4M.fd demo/vars.fd")
    print("  qemu-system-x86_64 -m 512 -nographic -no-reboot \\")
    print("    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \\")
    print("    -drive if=pflash,format=raw,file=demo/vars.fd \\")
    print(f"    -drive file={os.path.relpath(out)},format=vhdx,if=virtio")
    print()
    print("Or on BIOS (SeaBIOS; our MBR code and GRUB's core image start the probe \\bootmgr, which prints")
    print("the boot sector it was handed; quit QEMU with Ctrl-A X):")
    print(f"  .venv/bin/wim2vhd apply {os.path.relpath(wim)} demo/bios.vhd --index 1 --size 4G --layout bios --force")
    print("  qemu-system-x86_64 -m 256 -nographic -no-reboot -drive file=demo/bios.vhd,format=vpc")
    print()
    print("With a real install.wim:  .venv/bin/wim2vhd apply install.wim --index 1 win.vhdx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
