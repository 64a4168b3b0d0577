/*
 * Routing libntfs-3g's I/O into a w2v_disk, unprivileged.
 *
 * wimlib's NTFS-3G mode (and any other libntfs-3g user in this process)
 * calls ntfs_mount(name, flags), which allocates its device with
 * &ntfs_device_default_io_ops, the operations table that libntfs-3g exports
 * as a writable data symbol (ntfs_device_unix_io_ops on Linux).  We patch
 * that table once, in this process only: every operation first checks
 * whether the device name is one of ours ("w2v:N") and otherwise calls the
 * saved original, so real files and block devices behave exactly as before.
 * Our names resolve to a registered window (offset, length) of a w2v_disk:
 * a partition inside a VHD or VHDX.  No loop device, mount, FUSE or
 * capability is involved, and no I/O ever calls back into Python.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include "w2v_ntfs3g.h"
#include "w2v_block.h"
#include "w2v_ntfsdev.h"

#define W2V_PREFIX "w2v:"
#define MAX_DEVS 64

struct w2v_window {
	w2v_disk *disk;
	uint64_t offset, length;
	uint32_t sector_size;
	int writable;
	int in_use;
};

struct w2v_open {
	struct w2v_window *win;
	int64_t pos;
};

static struct w2v_window windows[MAX_DEVS];
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ntfs_device_operations orig_ops;
static int installed;

static int ours(struct ntfs_device *dev)
{
	return dev->d_name && strncmp(dev->d_name, W2V_PREFIX, sizeof(W2V_PREFIX) - 1) == 0;
}

static struct w2v_window *lookup(const char *name)
{
	char *end;
	long id = strtol(name + sizeof(W2V_PREFIX) - 1, &end, 10);
	if (*end || id < 0 || id >= MAX_DEVS)
		return NULL;
	pthread_mutex_lock(&reg_lock);
	struct w2v_window *w = windows[id].in_use ? &windows[id] : NULL;
	pthread_mutex_unlock(&reg_lock);
	return w;
}

#define PRIV(dev) ((struct w2v_open *)(dev)->d_private)

static int dev_open(struct ntfs_device *dev, int flags)
{
	if (!ours(dev))
		return orig_ops.open(dev, flags);
	if (NDevOpen(dev)) {
		errno = EBUSY;
		return -1;
	}
	struct w2v_window *w = lookup(dev->d_name);
	if (!w) {
		errno = ENOENT;
		return -1;
	}
	int rw = (flags & O_ACCMODE) != O_RDONLY;
	if (rw && !w->writable) {
		errno = EROFS;
		return -1;
	}
	struct w2v_open *o = calloc(1, sizeof(*o));
	if (!o) {
		errno = ENOMEM;
		return -1;
	}
	o->win = w;
	dev->d_private = o;
	if (!rw)
		NDevSetReadOnly(dev);
	NDevSetOpen(dev);
	return 0;
}

static int dev_sync(struct ntfs_device *dev)
{
	if (!ours(dev))
		return orig_ops.sync(dev);
	/* Write back to the file; the one fsync happens when the disk is finalised. */
	int r = w2v_flush(PRIV(dev)->win->disk);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	NDevClearDirty(dev);
	return 0;
}

static int dev_close(struct ntfs_device *dev)
{
	if (!ours(dev))
		return orig_ops.close(dev);
	if (!NDevOpen(dev)) {
		errno = EBADF;
		return -1;
	}
	int r = 0;
	if (NDevDirty(dev))
		r = dev_sync(dev);
	NDevClearOpen(dev);
	free(dev->d_private);
	dev->d_private = NULL;
	return r;
}

static s64 dev_seek(struct ntfs_device *dev, s64 offset, int whence)
{
	if (!ours(dev))
		return orig_ops.seek(dev, offset, whence);
	struct w2v_open *o = PRIV(dev);
	s64 base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? o->pos :
		whence == SEEK_END ? (s64)o->win->length : -1;
	if (base < 0 || base + offset < 0) {
		errno = EINVAL;
		return -1;
	}
	o->pos = base + offset;
	return o->pos;
}

static s64 dev_pread(struct ntfs_device *dev, void *buf, s64 count, s64 offset)
{
	if (!ours(dev))
		return orig_ops.pread(dev, buf, count, offset);
	struct w2v_window *w = PRIV(dev)->win;
	if (count < 0 || offset < 0) {
		errno = EINVAL;
		return -1;
	}
	if ((uint64_t)offset >= w->length)
		return 0;
	if ((uint64_t)count > w->length - offset)
		count = w->length - offset;
	int64_t r = w2v_pread(w->disk, buf, count, w->offset + offset);
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

static s64 dev_pwrite(struct ntfs_device *dev, const void *buf, s64 count, s64 offset)
{
	if (!ours(dev))
		return orig_ops.pwrite(dev, buf, count, offset);
	struct w2v_window *w = PRIV(dev)->win;
	if (NDevReadOnly(dev)) {
		errno = EROFS;
		return -1;
	}
	if (count < 0 || offset < 0) {
		errno = EINVAL;
		return -1;
	}
	if ((uint64_t)offset >= w->length || (uint64_t)count > w->length - offset) {
		errno = ENOSPC;
		return -1;
	}
	NDevSetDirty(dev);
	int64_t r = w2v_pwrite(w->disk, buf, count, w->offset + offset);
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

static s64 dev_read(struct ntfs_device *dev, void *buf, s64 count)
{
	if (!ours(dev))
		return orig_ops.read(dev, buf, count);
	s64 r = dev_pread(dev, buf, count, PRIV(dev)->pos);
	if (r > 0)
		PRIV(dev)->pos += r;
	return r;
}

static s64 dev_write(struct ntfs_device *dev, const void *buf, s64 count)
{
	if (!ours(dev))
		return orig_ops.write(dev, buf, count);
	s64 r = dev_pwrite(dev, buf, count, PRIV(dev)->pos);
	if (r > 0)
		PRIV(dev)->pos += r;
	return r;
}

static int dev_stat(struct ntfs_device *dev, struct stat *st)
{
	if (!ours(dev))
		return orig_ops.stat(dev, st);
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | 0600;
	st->st_size = PRIV(dev)->win->length;
	st->st_blksize = 4096;
	return 0;
}

static int dev_ioctl(struct ntfs_device *dev, unsigned long request, void *argp)
{
	if (!ours(dev))
		return orig_ops.ioctl(dev, request, argp);
	struct w2v_window *w = PRIV(dev)->win;
	/* libntfs-3g asks for the size and sector size the way it would ask a block device. */
	switch (request) {
	case BLKGETSIZE64:
		*(uint64_t *)argp = w->length;
		return 0;
	case BLKGETSIZE:
		*(unsigned long *)argp = w->length / 512;
		return 0;
	case BLKSSZGET:
		*(int *)argp = (int)w->sector_size;
		return 0;
	case BLKBSZGET:
		*(int *)argp = 4096;
		return 0;
	default:
		errno = ENOTTY;
		return -1;
	}
}

int w2v_ntfsdev_install(void)
{
	pthread_mutex_lock(&reg_lock);
	if (!installed) {
		orig_ops = ntfs_device_default_io_ops;
		struct ntfs_device_operations *t = &ntfs_device_default_io_ops;
		t->open = dev_open;
		t->close = dev_close;
		t->seek = dev_seek;
		t->read = dev_read;
		t->write = dev_write;
		t->pread = dev_pread;
		t->pwrite = dev_pwrite;
		t->sync = dev_sync;
		t->stat = dev_stat;
		t->ioctl = dev_ioctl;
		installed = 1;
	}
	pthread_mutex_unlock(&reg_lock);
	return 0;
}

int w2v_ntfsdev_register(w2v_disk *disk, uint64_t offset, uint64_t length, uint32_t sector_size, int writable)
{
	w2v_ntfsdev_install();
	pthread_mutex_lock(&reg_lock);
	int id = -1;
	for (int i = 0; i < MAX_DEVS; i++) {
		if (!windows[i].in_use) {
			windows[i] = (struct w2v_window){ disk, offset, length, sector_size ? sector_size : 512, writable, 1 };
			id = i;
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
	return id < 0 ? -EMFILE : id;
}

void w2v_ntfsdev_unregister(int id)
{
	if (id < 0 || id >= MAX_DEVS)
		return;
	pthread_mutex_lock(&reg_lock);
	windows[id].in_use = 0;
	pthread_mutex_unlock(&reg_lock);
}
