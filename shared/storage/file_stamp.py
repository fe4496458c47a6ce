"""The stamp of a local file: what tells it from any other file that ever had its name.

A reader that was told a file's SHA-256 by its writer (an indexing event) may use it instead of hashing the bytes
again, but only for the very file the writer made: an object deleted and sent again under the same key is another
file. The stamp holds the device and inode number, the inode's generation (``FS_IOC_GETVERSION``: ext4, XFS and
btrfs draw a new one whenever an inode number is used again), the change time and the size. The store never
changes an object in place (journal recovery writes a new file); a change made by hand moves the change time
(within one clock tick an older kernel may keep it; the size still tells a grown or cut file). Where the file
system has no generation number there is no stamp: an inode number and a change time alone could be another
file's.
"""

from __future__ import annotations

import fcntl
import os
import struct

_FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long) on 64-bit Linux
_LONG = struct.Struct("l")


def file_stamp(fd: int) -> str | None:
    """The stamp of an open file, or None when its file system keeps no inode generation."""
    try:
        generation = _LONG.unpack(fcntl.ioctl(fd, _FS_IOC_GETVERSION, bytes(_LONG.size)))[0]
    except OSError:  # ENOTTY, EOPNOTSUPP, EINVAL: no generation numbers here (tmpfs, overlay, network mounts)
        return None
    info = os.fstat(fd)
    return f"{info.st_dev:x}.{info.st_ino:x}.{generation & 0xFFFFFFFF:x}.{info.st_ctime_ns:x}.{info.st_size:x}"
