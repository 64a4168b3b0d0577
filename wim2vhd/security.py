"""Windows security descriptors as bytes: SIDs, ACEs, ACLs and self-relative descriptors
([MS-DTYP] 2.4.2 SID, 2.4.4 ACE, 2.4.5 ACL, 2.4.6 SECURITY_DESCRIPTOR), pure functions.

Shared by what sets them on NTFS files (wim2vhd.ntfs) and on registry keys (wim2vhd.registry).
"""
from __future__ import annotations

import dataclasses
import re
import struct
from typing import Sequence

from wim2vhd import errors

SID_SYSTEM = "S-1-5-18"
SID_ADMINISTRATORS = "S-1-5-32-544"
SID_USERS = "S-1-5-32-545"
SID_EVERYONE = "S-1-1-0"
SID_AUTHENTICATED_USERS = "S-1-5-11"
SID_CREATOR_OWNER = "S-1-3-0"
SID_GUESTS = "S-1-5-32-546"
SID_TRUSTED_INSTALLER = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"

# Access masks
FILE_ALL_ACCESS = 0x001F01FF
FILE_GENERIC_READ = 0x00120089
FILE_READ_EXECUTE = 0x001200A9
FILE_MODIFY = 0x001301BF
GENERIC_ALL = 0x10000000
GENERIC_READ_EXECUTE = 0xA0000000
WRITE_DAC = 0x00040000
DELETE = 0x00010000

# ACE types and flags
ACCESS_ALLOWED = 0
ACCESS_DENIED = 1
OBJECT_INHERIT = 0x01
CONTAINER_INHERIT = 0x02
NO_PROPAGATE_INHERIT = 0x04
INHERIT_ONLY = 0x08
INHERITED = 0x10

# Security descriptor control bits
SE_DACL_PRESENT = 0x0004
SE_SACL_PRESENT = 0x0010
SE_DACL_AUTO_INHERITED = 0x0400
SE_DACL_PROTECTED = 0x1000
SE_SELF_RELATIVE = 0x8000

SD_HEADER = struct.Struct("<BBHIIII")  # revision, sbz1, control, owner, group, sacl, dacl
ACL_HEADER = struct.Struct("<BBHHH")   # revision, sbz1, size, ace count, sbz2
ACE_HEADER = struct.Struct("<BBHI")    # type, flags, size, access mask
ACL_REVISION = 2

_SID_RE = re.compile(r"^S-1-(\d+)((?:-\d+){0,15})$", re.IGNORECASE)


def sid_to_bytes(sid: str) -> bytes:
    """'S-1-5-18' -> its binary form."""
    m = _SID_RE.match(sid.strip())
    if not m:
        raise errors.UsageError(f"invalid SID {sid!r}: expected the S-1-<authority>-<sub>... form")
    authority = int(m.group(1))
    subs = [int(x) for x in m.group(2).split("-")[1:]]
    if authority >= 1 << 48 or any(s >= 1 << 32 for s in subs):
        raise errors.UsageError(f"invalid SID {sid!r}: a component is out of range")
    return bytes([1, len(subs)]) + authority.to_bytes(6, "big") + b"".join(struct.pack("<I", s) for s in subs)


def sid_from_bytes(data: bytes, offset: int = 0) -> tuple[str, int]:
    """The SID at offset, as text, and its length in bytes."""
    if len(data) < offset + 8 or data[offset] != 1:
        raise errors.CorruptInput("invalid SID in a security descriptor")
    n = data[offset + 1]
    size = 8 + 4 * n
    if len(data) < offset + size:
        raise errors.CorruptInput("truncated SID in a security descriptor")
    authority = int.from_bytes(data[offset + 2:offset + 8], "big")
    subs = struct.unpack_from(f"<{n}I", data, offset + 8)
    return "S-1-" + "-".join(str(x) for x in (authority, *subs)), size


@dataclasses.dataclass(frozen=True)
class Ace:
    """One access control entry: allow (or deny) ``mask`` to ``sid``."""

    sid: str
    mask: int
    type: int = ACCESS_ALLOWED
    flags: int = 0

    def to_bytes(self) -> bytes:
        sid = sid_to_bytes(self.sid)
        return ACE_HEADER.pack(self.type, self.flags, ACE_HEADER.size + len(sid), self.mask) + sid


def allow(sid: str, mask: int, flags: int = 0) -> Ace:
    return Ace(sid, mask, ACCESS_ALLOWED, flags)


def deny(sid: str, mask: int, flags: int = 0) -> Ace:
    return Ace(sid, mask, ACCESS_DENIED, flags)


def _acl(aces: Sequence[Ace]) -> bytes:
    body = b"".join(a.to_bytes() for a in aces)
    return ACL_HEADER.pack(ACL_REVISION, 0, ACL_HEADER.size + len(body), len(aces), 0) + body


@dataclasses.dataclass(frozen=True)
class SecurityDescriptor:
    owner: str
    group: str
    dacl: tuple[Ace, ...] | None  # None: no DACL (everyone has full access)
    sacl: tuple[Ace, ...] | None = None
    control: int = 0

    def to_bytes(self) -> bytes:
        """Self-relative: header, SACL, DACL, owner, group (the order Windows
        writes and the one libntfs-3g's size check expects)."""
        control = SE_SELF_RELATIVE | self.control
        pos = SD_HEADER.size
        parts = []
        sacl_off = dacl_off = 0
        if self.sacl is not None:
            control |= SE_SACL_PRESENT
            parts.append(_acl(self.sacl))
            sacl_off, pos = pos, pos + len(parts[-1])
        if self.dacl is not None:
            control |= SE_DACL_PRESENT
            parts.append(_acl(self.dacl))
            dacl_off, pos = pos, pos + len(parts[-1])
        owner, group = sid_to_bytes(self.owner), sid_to_bytes(self.group)
        owner_off, group_off = pos, pos + len(owner)
        return SD_HEADER.pack(1, 0, control, owner_off, group_off, sacl_off, dacl_off) + b"".join(parts) + owner + group

    @classmethod
    def from_bytes(cls, data: bytes) -> "SecurityDescriptor":
        if len(data) < SD_HEADER.size or data[0] != 1:
            raise errors.CorruptInput("not a self-relative security descriptor")
        _, _, control, owner_off, group_off, sacl_off, dacl_off = SD_HEADER.unpack_from(data)
        owner = sid_from_bytes(data, owner_off)[0] if owner_off else ""
        group = sid_from_bytes(data, group_off)[0] if group_off else ""

        def acl(off: int) -> tuple[Ace, ...]:
            _, _, size, count, _ = ACL_HEADER.unpack_from(data, off)
            pos, aces = off + ACL_HEADER.size, []
            for _ in range(count):
                t, f, sz, mask = ACE_HEADER.unpack_from(data, pos)
                aces.append(Ace(sid_from_bytes(data, pos + ACE_HEADER.size)[0], mask, t, f))
                pos += sz
            return tuple(aces)

        dacl = acl(dacl_off) if (control & SE_DACL_PRESENT) and dacl_off else None
        sacl = acl(sacl_off) if (control & SE_SACL_PRESENT) and sacl_off else None
        extra = control & ~(SE_SELF_RELATIVE | SE_DACL_PRESENT | SE_SACL_PRESENT)
        return cls(owner, group, dacl, sacl, extra)


def security_descriptor(owner: str, group: str, dacl: Sequence[Ace] | None,
                        *, protected: bool = False, auto_inherited: bool = True) -> bytes:
    """A self-relative security descriptor, ready for set_security/write_file."""
    control = (SE_DACL_PROTECTED if protected else 0) | (SE_DACL_AUTO_INHERITED if auto_inherited else 0)
    return SecurityDescriptor(owner, group, tuple(dacl) if dacl is not None else None, None, control).to_bytes()
