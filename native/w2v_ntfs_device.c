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
#include <unistd.h>
#include <time.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include "w2v_ntfs3g.h"
#include <ntfs-3g/lcnalloc.h>
#include "w2v_block.h"
#include "w2v_ntfs_device.h"
#include "w2v_got.h"

#define W2V_PREFIX "w2v:"
#define MAX_DEVS 64

struct w2v_window {
	w2v_disk *disk;
	uint64_t offset, length;
	uint32_t sector_size;
	int writable;
	int compact;      /* steer libntfs-3g's data allocations to stay contiguous (see below) */
	int64_t next_lcn; /* where the next new file's clusters should start, or -1 */
	int64_t next_mft_lcn; /* the same for allocations in the MFT zone */
	int in_use;
	int full;         /* the volume ran out of room: no free clusters, or a write past the window */
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
		__atomic_store_n(&w->full, 1, __ATOMIC_RELAXED);
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
			windows[i] = (struct w2v_window){ disk, offset, length, sector_size ? sector_size : 512, writable,
							  0, -1, -1, 1, 0 };
			id = i;
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
	return id < 0 ? -EMFILE : id;
}

/* ---- compact allocation ------------------------------------------------
 *
 * libntfs-3g's cluster allocator, asked for clusters with no hint (the first
 * clusters of each new file), starts at the data zone's current position and
 * then moves that position NTFS_LCNALLOC_SKIP (4096) clusters past what it
 * allocated.  Over thousands of files this scatters data every 16 MiB across
 * the whole volume.  A raw sparse file does not mind; a dynamic VHD(X), whose
 * blocks are 1 MiB or more, allocates nearly every block it touches.
 *
 * For our windows with compact set, we wrap ntfs_cluster_alloc: before a
 * data-zone allocation we set vol->data1_zone_pos to just past the previous
 * allocation (the allocator falls back to that position when a hint fails
 * too), so files are laid out one after another, as Windows Setup lays them
 * out.  The wrapper is installed in the one GOT slot through which libntfs-3g
 * calls its own ntfs_cluster_alloc (w2v_got.c).  Other volumes and other
 * callers see the stock allocator.
 */
typedef runlist *(*cluster_alloc_fn)(ntfs_volume *, VCN, s64, LCN, const NTFS_CLUSTER_ALLOCATION_ZONES);
/* Set before any slot leads to the wrapper: a call that enters it finds it set. */
static const cluster_alloc_fn orig_cluster_alloc = ntfs_cluster_alloc;

static runlist *compact_cluster_alloc(ntfs_volume *vol, VCN start_vcn, s64 count, LCN start_lcn,
				      const NTFS_CLUSTER_ALLOCATION_ZONES zone)
{
	struct w2v_window *w = NULL;
	if (vol && vol->dev && ours(vol->dev) && vol->dev->d_private)
		w = PRIV(vol->dev)->win;
	/* Also for hinted calls: when the hinted cluster is taken, the allocator falls back to the zone position. */
	if (w && w->compact) {
		if (zone == DATA_ZONE && w->next_lcn >= vol->mft_zone_end && w->next_lcn < vol->nr_clusters)
			vol->data1_zone_pos = w->next_lcn;
		else if (zone == MFT_ZONE && w->next_mft_lcn >= vol->mft_zone_start &&
			 w->next_mft_lcn < vol->mft_zone_end)
			vol->mft_zone_pos = w->next_mft_lcn;
	}
	runlist *rl = orig_cluster_alloc(vol, start_vcn, count, start_lcn, zone);
	if (w && !rl && errno == ENOSPC)
		__atomic_store_n(&w->full, 1, __ATOMIC_RELAXED); /* the volume is full, not the host */
	if (w && w->compact && rl) {
		for (runlist *r = rl; r->length; r++) {
			if (r->lcn < 0)
				continue;
			int64_t end = r->lcn + r->length;
			if (r->lcn >= vol->mft_zone_end && end > w->next_lcn)
				w->next_lcn = end;
			else if (r->lcn >= vol->mft_zone_start && r->lcn < vol->mft_zone_end && end > w->next_mft_lcn)
				w->next_mft_lcn = end;
		}
	}
	return rl;
}

static struct w2v_got_hook compact_hooks[] = {
	{ "ntfs_cluster_alloc", (void *)ntfs_cluster_alloc, (void *)compact_cluster_alloc, NULL, NULL },
};
struct w2v_got_group w2v_hooks_compact = {
	"compact-allocation", W2V_SONAME_NTFS3G, compact_hooks, 1, NULL, 0, NULL
};

int w2v_ntfsdev_set_compact(int id, int on)
{
	if (id < 0 || id >= MAX_DEVS)
		return -EINVAL;
	pthread_mutex_lock(&reg_lock);
	int r = on ? w2v_got_install(&w2v_hooks_compact) : W2V_HOOK_INSTALLED;
	if (r == W2V_HOOK_INSTALLED) {
		windows[id].compact = on;
		windows[id].next_lcn = -1;
		windows[id].next_mft_lcn = -1;
	}
	pthread_mutex_unlock(&reg_lock);
	return r == W2V_HOOK_INSTALLED ? 0 : -ENOSYS;
}

int w2v_ntfsdev_full(int id)
{
	if (id < 0 || id >= MAX_DEVS)
		return 0;
	return __atomic_load_n(&windows[id].full, __ATOMIC_RELAXED);
}

void w2v_ntfsdev_unregister(int id)
{
	if (id < 0 || id >= MAX_DEVS)
		return;
	pthread_mutex_lock(&reg_lock);
	windows[id].in_use = 0;
	pthread_mutex_unlock(&reg_lock);
}

/* ---- a fixed clock, for reproducible volumes ------------------------------
 *
 * libntfs-3g stamps what it creates with the current time (ntfs_current_time(),
 * an inline function that calls clock_gettime(CLOCK_REALTIME)): the file name
 * attributes of every new file and directory, and the times of the directories
 * it changes.  wimlib sets the times the image records afterwards, but not all
 * of these, so two applies of the same image differ in a few bytes per file.
 * With a fixed time set, libntfs-3g's calls to clock_gettime(CLOCK_REALTIME)
 * read that time instead (its GOT slot is patched, as for the allocator
 * above); every other clock, and every other library, is left alone.
 */
typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
static const clock_gettime_fn orig_clock_gettime = clock_gettime;
static volatile int fixed_on;
static struct timespec fixed_ts;

static int fixed_clock_gettime(clockid_t id, struct timespec *ts)
{
	if (fixed_on && id == CLOCK_REALTIME) {
		*ts = fixed_ts;
		return 0;
	}
	return orig_clock_gettime(id, ts);
}

static struct w2v_got_hook clock_hooks[] = {
	{ "clock_gettime", (void *)clock_gettime, (void *)fixed_clock_gettime, NULL, NULL },
};
struct w2v_got_group w2v_hooks_clock = {
	"clock", W2V_SONAME_NTFS3G, clock_hooks, 1, NULL, 0, NULL
};

int w2v_ntfsdev_fix_clock(int on, int64_t unix_seconds)
{
	int state = on ? w2v_got_install(&w2v_hooks_clock) : W2V_HOOK_INSTALLED;
	pthread_mutex_lock(&reg_lock);
	int r = 0;
	if (state != W2V_HOOK_INSTALLED) {
		r = -ENOSYS;
	} else {
		fixed_ts.tv_sec = unix_seconds;
		fixed_ts.tv_nsec = 0;
		fixed_on = on;
	}
	pthread_mutex_unlock(&reg_lock);
	return r;
}
