/*
 * Views: a file that wimlib opens by name, whose bytes are read from ranges
 * of another file.  A Windows ISO's install.wim is a list of extents in the
 * ISO (one or a few in UDF, several for an ISO 9660 multi-extent file); a
 * view of it lets wimlib read the image in place, where it would otherwise
 * need a copy as large as the image beside the output.  Linux has no
 * unprivileged way to name a byte range of a file as a file (that takes a
 * loop device or FUSE), so the naming happens in libwim's calls instead.
 *
 * wimlib 1.13 reads a WIM through six calls, each made from libwim through
 * its PLT (checked in its source: src/wim.c, file_io.c, header.c): open64 of
 * the name, realpath of it (kept for messages and wimlib_overwrite), read of
 * the header, lseek (only for a pipable WIM's header at the end), pread64 of
 * everything else, close.  Their GOT slots in libwim lead here (w2v_got.c):
 * for a registered view name, open returns a descriptor of the view, and the
 * other calls on such a descriptor are served from the view's extents.  Any
 * other name or descriptor goes to the real call, at the cost of one table
 * look-up.  Nothing changes for other libraries or for Python.
 *
 * A view's descriptor is a real one: a duplicate of a memfd of the view's
 * own, which stays empty.  So its number is not reused while the view holds
 * it, the read-ahead (w2v_readahead.c) can recognise it by device and inode
 * as it does a WIM file, and a call that reached the kernel without coming
 * here would read nothing (an end of file, which wimlib reports), never
 * another file's bytes.  Views are read-only: open for writing is EROFS.
 *
 * Policy (which extents, which name) is Python's (wim2vhd/wim/iso.py); here
 * is the per-read work: a binary search of the extents and preads of the
 * ISO's descriptor, on wimlib's thread and the read-ahead's helpers alike.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "w2v_got.h"
#include "w2v_vfile.h"
#include "w2v_vfile_int.h"

#define MAX_FDS 4096   /* view descriptors are looked up by number below this */

struct w2v_view {
	char *name;
	int fd;           /* the file the extents are in (our own duplicate) */
	int anchor;       /* what the view's descriptors duplicate */
	uint64_t size;
	uint32_t n;
	uint64_t *start;  /* n + 1 entries: where extent i begins in the view; start[n] = size */
	int64_t *src;     /* where it is in fd; < 0: zeros */
	int open;         /* descriptors of it open */
	int registered;   /* its name is looked up */
	struct w2v_view *next;
};

struct vfd {
	w2v_view *v;
	uint64_t pos;     /* for read and lseek */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;  /* the list, open counts, lifetimes */
static w2v_view *views;
static int nviews;                  /* registered views: 0 lets open skip the list */
static struct vfd *fds[MAX_FDS];    /* a view's descriptors, by number (atomic loads and stores) */

static struct vfd *vfd_of(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return NULL;
	return __atomic_load_n(&fds[fd], __ATOMIC_ACQUIRE);
}

static void view_free(w2v_view *v)
{
	close(v->fd);
	close(v->anchor);
	free(v->start);
	free(v->src);
	free(v->name);
	free(v);
}

/* ---- reading --------------------------------------------------------------- */

/* The extent holding view offset off (< size). */
static uint32_t find_extent(const w2v_view *v, uint64_t off)
{
	uint32_t lo = 0, hi = v->n;   /* start[lo] <= off < start[hi] */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (v->start[mid] <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

ssize_t w2v_view_pread(w2v_view *v, void *buf, size_t count, uint64_t off)
{
	if (off >= v->size || count == 0)
		return 0;
	if (count > v->size - off)
		count = v->size - off;
	if (count > SSIZE_MAX)
		count = SSIZE_MAX;
	uint8_t *p = buf;
	size_t done = 0;
	uint32_t i = find_extent(v, off);
	while (done < count) {
		while (v->start[i + 1] <= off)
			i++;   /* (empty extents too) */
		uint64_t in = off - v->start[i];
		size_t want = count - done;
		if (want > v->start[i + 1] - off)
			want = v->start[i + 1] - off;
		ssize_t r;
		if (v->src[i] < 0) {
			memset(p + done, 0, want);
			r = (ssize_t)want;
		} else {
			r = pread(v->fd, p + done, want, (off_t)((uint64_t)v->src[i] + in));
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return done ? (ssize_t)done : -1;
			if (r == 0)
				break;   /* the file ends before the extent: a short read, as at an end of file */
		}
		done += (size_t)r;
		off += (uint64_t)r;
	}
	return (ssize_t)done;
}

ssize_t w2v_vfile_pread(int fd, void *buf, size_t count, off_t off)
{
	struct vfd *d = vfd_of(fd);
	if (!d)
		return pread(fd, buf, count, off);
	if (off < 0) {
		errno = EINVAL;
		return -1;
	}
	return w2v_view_pread(d->v, buf, count, (uint64_t)off);
}

/* ---- descriptors ------------------------------------------------------------ */

/* A new descriptor of v (lock held).  -1 with errno set. */
static int view_open(w2v_view *v)
{
	struct vfd *d = calloc(1, sizeof(*d));
	if (!d) {
		errno = ENOMEM;
		return -1;
	}
	int fd = fcntl(v->anchor, F_DUPFD_CLOEXEC, 0);
	if (fd >= MAX_FDS) {
		close(fd);
		fd = -1;
		errno = EMFILE;
	}
	if (fd < 0) {
		free(d);
		return -1;
	}
	d->v = v;
	v->open++;
	__atomic_store_n(&fds[fd], d, __ATOMIC_RELEASE);
	return fd;
}

static w2v_view *by_name(const char *path)
{
	for (w2v_view *v = views; v; v = v->next)
		if (v->registered && strcmp(v->name, path) == 0)
			return v;
	return NULL;
}

/* A descriptor of the view named path: >= 0, -1 with errno set, or -2 when there is no such view. */
static int open_view(const char *path, int flags)
{
	if (!path || !__atomic_load_n(&nviews, __ATOMIC_ACQUIRE))
		return -2;
	pthread_mutex_lock(&lock);
	w2v_view *v = by_name(path);
	int fd = -2;
	if (v && ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))) {
		errno = EROFS;
		fd = -1;
	} else if (v) {
		fd = view_open(v);
	}
	pthread_mutex_unlock(&lock);
	return fd;
}

int w2v_vfile_open(const char *path)
{
	int fd = open_view(path, O_RDONLY);
	return fd == -2 ? open(path, O_RDONLY | O_CLOEXEC) : fd;
}

int w2v_vfile_close(int fd)
{
	struct vfd *d = vfd_of(fd);
	if (!d)
		return close(fd);
	pthread_mutex_lock(&lock);
	/* Unlisted before the number is given back to the kernel, which may reuse it at once. */
	__atomic_store_n(&fds[fd], NULL, __ATOMIC_RELEASE);
	w2v_view *v = d->v;
	int last = --v->open == 0 && !v->registered;
	pthread_mutex_unlock(&lock);
	free(d);
	int r = close(fd);
	if (last)
		view_free(v);
	return r;
}

/* ---- libwim's calls ---------------------------------------------------------- */

static int hook_open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	int fd = open_view(path, flags);
	return fd == -2 ? open64(path, flags, mode) : fd;
}

static char *hook_realpath(const char *path, char *resolved)
{
	if (path && __atomic_load_n(&nviews, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&lock);
		w2v_view *v = by_name(path);
		char *r = NULL;
		if (v && resolved) {
			size_t n = strlen(v->name);
			if (n < PATH_MAX)
				r = memcpy(resolved, v->name, n + 1);
			else
				errno = ENAMETOOLONG;
		} else if (v) {
			if (!(r = strdup(v->name)))
				errno = ENOMEM;
		}
		pthread_mutex_unlock(&lock);
		if (v)
			return r;
	}
	return realpath(path, resolved);
}

static ssize_t hook_read(int fd, void *buf, size_t count)
{
	struct vfd *d = vfd_of(fd);
	if (!d)
		return read(fd, buf, count);
	ssize_t r = w2v_view_pread(d->v, buf, count, d->pos);
	if (r > 0)
		d->pos += (uint64_t)r;
	return r;
}

static off64_t hook_lseek(int fd, off64_t off, int whence)
{
	struct vfd *d = vfd_of(fd);
	if (!d)
		return lseek64(fd, off, whence);
	int64_t base;
	switch (whence) {
	case SEEK_SET: base = 0; break;
	case SEEK_CUR: base = (int64_t)d->pos; break;
	case SEEK_END: base = (int64_t)d->v->size; break;
	case SEEK_DATA:
	case SEEK_HOLE:
		if (off < 0 || (uint64_t)off >= d->v->size) {
			errno = ENXIO;
			return -1;
		}
		d->pos = whence == SEEK_DATA ? (uint64_t)off : d->v->size;   /* all data, no holes */
		return (off64_t)d->pos;
	default:
		errno = EINVAL;
		return -1;
	}
	if ((off > 0 && base > INT64_MAX - off) || base + off < 0) {
		errno = EINVAL;
		return -1;
	}
	d->pos = (uint64_t)(base + off);
	return (off64_t)d->pos;
}

static int hook_fstat(int fd, struct stat64 *st)
{
	struct vfd *d = vfd_of(fd);
	int r = fstat64(fd, st);
	if (r == 0 && d) {
		/* the view as a regular, read-only file of its size */
		st->st_mode = S_IFREG | 0444;
		st->st_size = (off64_t)d->v->size;
		st->st_blocks = (blkcnt64_t)((d->v->size + 511) / 512);
	}
	return r;
}

/* libwim's file calls, together: a view half served would be worse than none (Python copies instead). */
static struct w2v_got_hook file_hooks[] = {
	{ "open64", (void *)open64, (void *)hook_open, NULL, NULL },
	{ "realpath", (void *)realpath, (void *)hook_realpath, NULL, NULL },
	{ "read", (void *)read, (void *)hook_read, NULL, NULL },
	{ "pread64", (void *)pread64, (void *)w2v_vfile_pread, NULL, NULL },
	{ "lseek64", (void *)lseek64, (void *)hook_lseek, NULL, NULL },
	{ "close", (void *)close, (void *)w2v_vfile_close, NULL, NULL },
	{ "fstat64", (void *)fstat64, (void *)hook_fstat, NULL, NULL },
};
struct w2v_got_group w2v_hooks_vfile = {
	"iso-in-place", W2V_SONAME_WIM, file_hooks, sizeof(file_hooks) / sizeof(file_hooks[0]), NULL, 0, NULL
};

int w2v_vfile_install(void)
{
	return w2v_got_install(&w2v_hooks_vfile) == W2V_HOOK_INSTALLED ? 0 : -ENOSYS;
}

/* ---- views ----------------------------------------------------------------- */

w2v_view *w2v_view_new(const char *name, int fd, uint64_t size, const int64_t *src, const uint64_t *len,
		       uint32_t n)
{
	if (w2v_vfile_install() != 0) {
		errno = ENOSYS;
		return NULL;
	}
	uint64_t total = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (len[i] > UINT64_MAX - total || (src[i] >= 0 && len[i] > (uint64_t)INT64_MAX - (uint64_t)src[i])) {
			errno = EINVAL;
			return NULL;
		}
		total += len[i];
	}
	if (!name || !*name || total != size || size > (uint64_t)INT64_MAX) {
		errno = EINVAL;
		return NULL;
	}
	w2v_view *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->fd = v->anchor = -1;
	v->name = strdup(name);
	v->start = malloc(((size_t)n + 1) * sizeof(*v->start));
	v->src = malloc(((size_t)n + 1) * sizeof(*v->src));
	v->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	v->anchor = memfd_create("w2v-view", MFD_CLOEXEC);
	if (v->anchor < 0 && v->fd >= 0)
		v->anchor = fcntl(v->fd, F_DUPFD_CLOEXEC, 0);   /* no memfd: the file itself stands in */
	if (!v->name || !v->start || !v->src || v->fd < 0 || v->anchor < 0) {
		int e = errno ? errno : ENOMEM;
		if (v->fd >= 0)
			close(v->fd);
		if (v->anchor >= 0)
			close(v->anchor);
		v->fd = v->anchor = -1;
		free(v->start);
		free(v->src);
		free(v->name);
		free(v);
		errno = e;
		return NULL;
	}
	uint64_t at = 0;
	for (uint32_t i = 0; i < n; i++) {
		v->start[i] = at;
		v->src[i] = src[i];
		at += len[i];
	}
	v->start[n] = size;
	v->src[n] = -1;
	v->n = n;
	v->size = size;
	pthread_mutex_lock(&lock);
	if (by_name(name)) {
		pthread_mutex_unlock(&lock);
		view_free(v);
		errno = EINVAL;
		return NULL;
	}
	v->registered = 1;
	v->next = views;
	views = v;
	__atomic_add_fetch(&nviews, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&lock);
	return v;
}

int w2v_view_open_count(w2v_view *v)
{
	pthread_mutex_lock(&lock);
	int n = v ? v->open : 0;
	pthread_mutex_unlock(&lock);
	return n;
}

void w2v_view_close(w2v_view *v)
{
	if (!v)
		return;
	pthread_mutex_lock(&lock);
	for (w2v_view **p = &views; *p; p = &(*p)->next) {
		if (*p == v) {
			*p = v->next;
			break;
		}
	}
	v->registered = 0;
	__atomic_sub_fetch(&nviews, 1, __ATOMIC_RELEASE);
	int now = v->open == 0;
	pthread_mutex_unlock(&lock);
	if (now)
		view_free(v);
}
