/*
 * A fault-injection shim for the test suite, loaded with LD_PRELOAD.
 *
 * Writes (and, if asked, syncs and size changes) on files whose path starts
 * with W2V_FAULT_PATH succeed W2V_FAULT_AFTER times and then fail, every
 * time, with W2V_FAULT_ERRNO (a number, or EIO, ENOSPC, EDQUOT, EFBIG,
 * EROFS, EACCES).  Calls on other files pass through untouched.
 *
 *   W2V_FAULT_PATH     a path prefix: a directory with its trailing slash, or
 *                      a directory and the start of a file name
 *   W2V_FAULT_AFTER    calls that succeed first (default 0; -1: never fail,
 *                      only count)
 *   W2V_FAULT_TIMES    how many calls fail, after those: then they succeed
 *                      again (a transient fault); default: all
 *   W2V_FAULT_ERRNO    what the failing calls set errno to (default EIO)
 *   W2V_FAULT_OPS      which calls count: a comma list of write (write,
 *                      pwrite, writev, pwritev, fallocate, copy_file_range,
 *                      sendfile), sync (fsync, fdatasync, sync_file_range),
 *                      truncate (ftruncate); default "write"
 *   W2V_FAULT_COUNTER  a file of 8 zero bytes or more: the calls of every
 *                      process that loads the shim (the tool's, and mkntfs's
 *                      or mkfs.fat's it starts) are counted there together,
 *                      so a test reads afterwards how many there were
 *
 * The path of a descriptor is read from /proc/self/fd, so a file still
 * matches after it was renamed within the prefix or deleted.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OP_WRITE = 1, OP_SYNC = 2, OP_TRUNC = 4 };

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char prefix[4096];
static size_t prefix_len;
static long long after;
static long long times = -1;
static int fail_errno = EIO;
static unsigned ops = OP_WRITE;
static int64_t local_counter;
static int64_t *counter = &local_counter;

static int parse_errno(const char *s)
{
	static const struct { const char *name; int value; } names[] = {
		{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT }, { "EFBIG", EFBIG },
		{ "EROFS", EROFS }, { "EACCES", EACCES }, { "EPERM", EPERM },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i].name) == 0)
			return names[i].value;
	int v = atoi(s);
	return v > 0 ? v : EIO;
}

static void init(void)
{
	int saved = errno;
	const char *p = getenv("W2V_FAULT_PATH");
	if (p && *p && strlen(p) < sizeof(prefix)) {
		strcpy(prefix, p);
		prefix_len = strlen(p);
	}
	const char *a = getenv("W2V_FAULT_AFTER");
	after = a ? atoll(a) : 0;
	const char *t = getenv("W2V_FAULT_TIMES");
	if (t && *t)
		times = atoll(t);
	const char *e = getenv("W2V_FAULT_ERRNO");
	if (e && *e)
		fail_errno = parse_errno(e);
	const char *o = getenv("W2V_FAULT_OPS");
	if (o && *o) {
		ops = 0;
		if (strstr(o, "write"))
			ops |= OP_WRITE;
		if (strstr(o, "sync"))
			ops |= OP_SYNC;
		if (strstr(o, "truncate"))
			ops |= OP_TRUNC;
	}
	const char *c = getenv("W2V_FAULT_COUNTER");
	if (c && *c) {
		int fd = open(c, O_RDWR | O_CLOEXEC);
		if (fd >= 0) {
			void *m = mmap(NULL, sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (m != MAP_FAILED)
				counter = m;
			close(fd);
		}
	}
	errno = saved;
}

/* Does this call on fd fail?  Counts the calls on matching files. */
static int fault(int fd, unsigned op)
{
	pthread_once(&once, init);
	if (!prefix_len || !(ops & op) || fd < 0)
		return 0;
	int saved = errno;
	char link[64], path[4096];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	errno = saved;
	if (n < 0 || (size_t)n < prefix_len || memcmp(path, prefix, prefix_len) != 0)
		return 0;
	int64_t seen = __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
	if (after < 0 || seen < after || (times >= 0 && seen >= after + times))
		return 0;
	errno = fail_errno;
	return 1;
}

#define REAL(ret, name, ...) \
	static ret (*real)(__VA_ARGS__); \
	if (!real) \
		real = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(ssize_t, "write", int, const void *, size_t);
	return fault(fd, OP_WRITE) ? -1 : real(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(ssize_t, "pwrite", int, const void *, size_t, off_t);
	return fault(fd, OP_WRITE) ? -1 : real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	REAL(ssize_t, "pwrite64", int, const void *, size_t, off64_t);
	return fault(fd, OP_WRITE) ? -1 : real(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	REAL(ssize_t, "writev", int, const struct iovec *, int);
	return fault(fd, OP_WRITE) ? -1 : real(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(ssize_t, "pwritev", int, const struct iovec *, int, off_t);
	return fault(fd, OP_WRITE) ? -1 : real(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
	REAL(ssize_t, "pwritev64", int, const struct iovec *, int, off64_t);
	return fault(fd, OP_WRITE) ? -1 : real(fd, iov, cnt, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	REAL(ssize_t, "pwritev2", int, const struct iovec *, int, off_t, int);
	return fault(fd, OP_WRITE) ? -1 : real(fd, iov, cnt, off, flags);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off64_t off, int flags)
{
	REAL(ssize_t, "pwritev64v2", int, const struct iovec *, int, off64_t, int);
	return fault(fd, OP_WRITE) ? -1 : real(fd, iov, cnt, off, flags);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	REAL(int, "fallocate", int, int, off_t, off_t);
	return fault(fd, OP_WRITE) ? -1 : real(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	REAL(int, "fallocate64", int, int, off64_t, off64_t);
	return fault(fd, OP_WRITE) ? -1 : real(fd, mode, off, len);
}

ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t n, unsigned flags)
{
	REAL(ssize_t, "copy_file_range", int, off64_t *, int, off64_t *, size_t, unsigned);
	return fault(out, OP_WRITE) ? -1 : real(in, in_off, out, out_off, n, flags);
}

ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
	REAL(ssize_t, "sendfile", int, int, off_t *, size_t);
	return fault(out, OP_WRITE) ? -1 : real(out, in, off, n);
}

ssize_t sendfile64(int out, int in, off64_t *off, size_t n)
{
	REAL(ssize_t, "sendfile64", int, int, off64_t *, size_t);
	return fault(out, OP_WRITE) ? -1 : real(out, in, off, n);
}

int fsync(int fd)
{
	REAL(int, "fsync", int);
	return fault(fd, OP_SYNC) ? -1 : real(fd);
}

int fdatasync(int fd)
{
	REAL(int, "fdatasync", int);
	return fault(fd, OP_SYNC) ? -1 : real(fd);
}

int sync_file_range(int fd, off64_t off, off64_t n, unsigned flags)
{
	REAL(int, "sync_file_range", int, off64_t, off64_t, unsigned);
	return fault(fd, OP_SYNC) ? -1 : real(fd, off, n, flags);
}

int ftruncate(int fd, off_t len)
{
	REAL(int, "ftruncate", int, off_t);
	return fault(fd, OP_TRUNC) ? -1 : real(fd, len);
}

int ftruncate64(int fd, off64_t len)
{
	REAL(int, "ftruncate64", int, off64_t);
	return fault(fd, OP_TRUNC) ? -1 : real(fd, len);
}
