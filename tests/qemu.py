"""Boot a disk in qemu-system-x86_64 and read what the guest writes to its first serial port.

    text = boot(disk, firmware="uefi", expect="W2V-PROBE-END")

UEFI boots with OVMF (the code read-only, a copy of the variable store per
boot), BIOS with QEMU's default SeaBIOS.  No display, no network, no default
devices; the disk is attached as virtio-blk with ``snapshot=on``, so nothing the
guest does changes it and module-scoped disks can be booted more than once.

The accelerator is TCG unless ``W2V_QEMU_ACCEL`` says otherwise: the guests
are tiny (TCG boots OVMF to the probe in about 6 s, SeaBIOS in under 1 s),
and KVM inside a VM is not dependable: on the nested KVM this was written on,
OVMF stops with "KVM internal error" and SeaBIOS + GRUB take 14 s instead of
0.5 s.  ``W2V_QEMU_ACCEL=kvm`` uses KVM, ``auto`` uses it when /dev/kvm opens;
with either, a boot that ends in "KVM internal error" is retried under TCG
and TCG is used from then on.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

QEMU = "qemu-system-x86_64"
OVMF_DIRS = ("/usr/share/OVMF", "/usr/share/ovmf", "/usr/share/qemu")
OVMF_PAIRS = (("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"), ("OVMF_CODE.fd", "OVMF_VARS.fd"))
# Under TCG OVMF takes about 10 s to reach the boot loader on a 2-core machine; a loaded CI runner, longer.
TIMEOUT = float(os.environ.get("W2V_QEMU_TIMEOUT", "120"))

# qemu's vpc and vhdx drivers cannot open differencing disks (vhdx: "VHDX
# differencing disks are not supported", vpc: only fixed and dynamic), so the tests
# boot a differencing child through its flattened raw image (`wim2vhd disk convert`); a qcow2 child
# (whose backing file may be any of them) qemu boots itself.
FORMATS = {".vhdx": "vhdx", ".vhd": "vpc", ".qcow2": "qcow2", ".raw": "raw", ".img": "raw"}

_kvm_broken = False
last_boot: dict = {}  # accelerator and seconds of the last boot, for reports


class BootTimeout(AssertionError):
    pass


def qemu_missing() -> str | None:
    """Why a QEMU boot cannot run here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian: qemu-system-x86)"
    return None


def ovmf() -> tuple[str, str] | None:
    """(code, vars template) of an OVMF build, or None."""
    for d in OVMF_DIRS:
        for code, variables in OVMF_PAIRS:
            c, v = os.path.join(d, code), os.path.join(d, variables)
            if os.path.isfile(c) and os.path.isfile(v):
                return c, v
    return None


def _kvm_usable() -> bool:
    accel = os.environ.get("W2V_QEMU_ACCEL", "tcg")
    if accel not in ("tcg", "kvm", "auto"):
        raise ValueError(f"W2V_QEMU_ACCEL must be tcg, kvm or auto, not {accel!r}")
    if accel == "tcg" or _kvm_broken:
        return False
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    return True


def disk_format(path: str | os.PathLike) -> str:
    return FORMATS.get(os.path.splitext(str(path))[1].lower(), "raw")


def command(disk: str | os.PathLike, firmware: str, serial: str, workdir: str, *, kvm: bool,
            sector_size: int = 512) -> list[str]:
    cmd = [QEMU, "-nodefaults", "-display", "none", "-no-reboot", "-m", "256",
           "-accel", "kvm" if kvm else "tcg", "-serial", f"file:{serial}", "-monitor", "none",
           "-drive", f"file={disk},format={disk_format(disk)},if=none,id=disk0,snapshot=on",
           # a virtio disk with the logical sectors the image was made for (a 4Kn disk for 4096)
           "-device", f"virtio-blk-pci,drive=disk0,logical_block_size={sector_size},"
                      f"physical_block_size={max(sector_size, 512)}"]
    if firmware == "uefi":
        fw = ovmf()
        if fw is None:
            raise FileNotFoundError("no OVMF firmware (Debian: ovmf)")
        code, template = fw
        variables = os.path.join(workdir, "OVMF_VARS.fd")
        shutil.copyfile(template, variables)
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={variables}"]
    elif firmware == "bios":
        # The BIOS probe writes here when it is done: QEMU exits.
        cmd += ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    else:
        raise ValueError(f"firmware must be uefi or bios, not {firmware!r}")
    return cmd


def _run(disk, firmware: str, expect: str, timeout: float, kvm: bool, sector_size: int) -> tuple[str, str, float]:
    """One boot: (serial text, qemu's stderr, seconds).  Raises BootTimeout when expect never shows."""
    with tempfile.TemporaryDirectory(prefix="w2v-qemu-") as work:
        serial = os.path.join(work, "serial.txt")
        errfile = os.path.join(work, "stderr.txt")
        cmd = command(disk, firmware, serial, work, kvm=kvm, sector_size=sector_size)
        start = time.monotonic()
        with open(errfile, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        text = stderr = ""
        try:
            while True:
                exited = proc.poll() is not None
                text = _read(serial)
                stderr = _read(errfile)
                if expect in text:
                    break
                if exited or "KVM internal error" in stderr:
                    break
                if time.monotonic() - start > timeout:
                    raise BootTimeout(f"no {expect!r} from {disk} ({firmware}, "
                                      f"{'kvm' if kvm else 'tcg'}) in {timeout:.0f}s.\n"
                                      f"serial:\n{text}\nqemu stderr:\n{stderr}")
                time.sleep(0.1)
            if expect in text:
                # Let the probe finish (it powers off); what it wrote before is already there.
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                text = _read(serial)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        return text, _read(errfile), time.monotonic() - start


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def boot(disk: str | os.PathLike, firmware: str = "uefi", *, expect: str, timeout: float = TIMEOUT,
         sector_size: int = 512) -> str:
    """Boot ``disk`` until ``expect`` appears on the serial port; return the serial text.

    Raises AssertionError (BootTimeout) with the serial text and qemu's messages when
    the marker never comes, or qemu exits before it.
    """
    global _kvm_broken
    kvm = _kvm_usable()
    text, stderr, secs = _run(disk, firmware, expect, timeout, kvm, sector_size)
    if kvm and expect not in text and "KVM internal error" in stderr:
        _kvm_broken = True
        text, stderr, secs = _run(disk, firmware, expect, timeout, False, sector_size)
        kvm = False
    last_boot.update(accel="kvm" if kvm else "tcg", seconds=round(secs, 1))
    if expect not in text:
        raise BootTimeout(f"qemu stopped before {expect!r} from {disk} ({firmware}, {'kvm' if kvm else 'tcg'}).\n"
                          f"serial:\n{text}\nqemu stderr:\n{stderr}")
    return text
