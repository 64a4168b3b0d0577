#ifndef W2V_NTFS_DEVICE_H
#define W2V_NTFS_DEVICE_H
#include <stdint.h>
#include "w2v_block.h"
/* Patch libntfs-3g's default device operations (once per process); see w2v_ntfs_device.c. */
int w2v_ntfsdev_install(void);
/* A window of a disk as the libntfs-3g device "w2v:<id>".  Returns id, or -errno. */
int w2v_ntfsdev_register(w2v_disk *disk, uint64_t offset, uint64_t length, uint32_t sector_size, int writable);
void w2v_ntfsdev_unregister(int id);
/* Keep libntfs-3g's data allocations on window id contiguous (for dynamic disks).  0, or -ENOSYS. */
int w2v_ntfsdev_set_compact(int id, int on);
/* Whether the volume on window id ran out of room: libntfs-3g found no free clusters (seen where
 * w2v_ntfsdev_set_compact wraps the allocator), or wrote past the window.  A full host file system
 * is not this: see w2v_host_error.  Sticky until the window is unregistered. */
int w2v_ntfsdev_full(int id);
/* While on, libntfs-3g reads unix_seconds as the current time (reproducible volumes).  0, or -ENOSYS. */
int w2v_ntfsdev_fix_clock(int on, int64_t unix_seconds);
#endif
