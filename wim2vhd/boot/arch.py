"""An image's processor architecture as the boot files show it, and the removable-media fallback
loader each one boots (pure)."""
from __future__ import annotations

# The removable-media boot file per architecture (UEFI specification, 3.5.1.1 "Removable Media Boot
# Behavior"); keys are wim.ImageInfo.architecture, from the image's WINDOWS/ARCH.
FALLBACK_LOADER = {"x64": "bootx64.efi", "arm64": "bootaa64.efi", "x86": "bootia32.efi",
                   "ia64": "bootia64.efi", "arm": "bootarm.efi"}
# The same architectures by the PE/COFF machine type of a loader (bootmgfw.efi, winload.efi).
PE_MACHINE = {0x8664: "x64", 0xAA64: "arm64", 0x014C: "x86", 0x0200: "ia64", 0x01C4: "arm"}
# Bytes of a loader that hold its PE header (the MZ stub and the COFF header after it).
PE_HEAD = 4096


def pe_machine(data: bytes) -> int | None:
    """The COFF machine field of a PE image, or None when the bytes are no PE image."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    e = int.from_bytes(data[0x3C:0x40], "little")
    if e + 6 > len(data) or data[e:e + 4] != b"PE\0\0":
        return None
    return int.from_bytes(data[e + 4:e + 6], "little")


def fallback_loader(architecture: str | None, bootmgfw: bytes) -> str:
    """The file name of \\EFI\\Boot\\boot*.efi for an image: by its WINDOWS/ARCH, else (no
    ARCH, or one without a UEFI name) by bootmgfw.efi's PE machine type, else x64's."""
    if architecture in FALLBACK_LOADER:
        return FALLBACK_LOADER[architecture]
    machine = pe_machine(bootmgfw)
    if PE_MACHINE.get(machine) in FALLBACK_LOADER:
        return FALLBACK_LOADER[PE_MACHINE[machine]]
    return FALLBACK_LOADER["x64"]
