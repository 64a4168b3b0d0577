"""NTFS volumes inside a virtual disk, through libntfs-3g, with no mount.

    from wim2vhd.ntfs import FileAttr, NtfsVolume, NtfsWindow
    with NtfsWindow(disk, part.start, part.size) as dev, NtfsVolume(dev) as vol:
        vol.mkdir(r"\\Windows\\Panther", parents=True)
        vol.write_file(r"\\Windows\\Panther\\unattend.xml", data, attributes=FileAttr.ARCHIVE,
                       security_descriptor=sd)          # bytes from wim2vhd.security
        vol.read_file(r"\\Windows\\Boot\\EFI\\bootmgfw.efi")

* window: a partition of a disk as a libntfs-3g device ("w2v:N"), and libntfs-3g's pinned clock;
* volume: files, streams, attributes, security, reparse points and times of an open volume
  (paths relative to the volume root, ``\\`` or ``/``, matched without regard to case);
* reparse: symlink and junction reparse buffers (pure).

A volume can also be opened on a plain image file ("part.img").
"""
from wim2vhd.ntfs.reparse import (IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_SYMLINK, ReparseLink,
                                  junction_reparse, parse_link_reparse, symlink_reparse)
from wim2vhd.ntfs.volume import FileAttr, NtfsStat, NtfsVolume, from_filetime, to_filetime
from wim2vhd.ntfs.window import NtfsWindow, fixed_clock

__all__ = ["FileAttr", "IO_REPARSE_TAG_MOUNT_POINT", "IO_REPARSE_TAG_SYMLINK", "NtfsStat", "NtfsVolume",
           "NtfsWindow", "ReparseLink", "fixed_clock", "from_filetime", "junction_reparse",
           "parse_link_reparse", "symlink_reparse", "to_filetime"]
