/*
 * The background writer: overlaps the file writes of block translation with
 * the caller's work (wimlib's decompression, during apply).
 *
 * One or more threads take jobs from the head of the queue, in order.  A job
 * waits while it overlaps one that another thread is still writing, so bytes
 * written twice land in the order they were queued; jobs that do not overlap
 * go in parallel (copying into the page cache is what limits a convert, and
 * two threads do it on two cores).
 *
 * Writes are copied into a FIFO queue, bounded by max_pending bytes, and one
 * thread pwrite()s them in order.  When the file is to be synced (`direct`)
 * it then asks the kernel to start writing buffered megabytes back
 * (sync_file_range), so that the final fsync has little left to do; without
 * a sync it does not, as copying into pages under writeback costs the kernel
 * several times as much (docs/performance.md, "What the code does").
 * A read of the file first waits for the queued writes that touch its range,
 * so it always sees what was written.  The first error is kept and returned
 * by the next call that waits.
 *
 * Jobs of 4 KiB or more take 1 MiB buffers from a pool, as long as no more
 * than max_pending bytes of them are out, and larger writes are queued as
 * several such jobs (a fresh malloc of a megabyte or more is an mmap, a page
 * fault per 4 KiB and an munmap each time, which serialise the threads on the
 * address space: a convert took 130k page faults where qemu-img takes 5k).
 * A write that continues the last queued job is appended to it, and the
 * last job is not taken while it has room (until a drain):
 * the cache writes its lines back one by one in offset order, libntfs-3g
 * writes a large file in pieces, and either leaves here as large writes.
 *
 * With `direct` set, large aligned jobs are written with O_DIRECT, through a
 * second descriptor of the same file: the device reads them from our buffer,
 * and the kernel neither copies them into the page cache nor writes them back
 * later (on the 2-vCPU machine of docs/performance.md that copy and writeback
 * were a quarter of an apply's CPU time).  Smaller and unaligned writes (VHDX
 * metadata, odd sectors) stay buffered; Linux keeps the two coherent (a
 * direct write first writes back and then drops the cached pages it covers),
 * and overlapping jobs are never in flight together.  A file system that
 * refuses O_DIRECT, at open or on a write, gets buffered writes only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>
#include "w2v_block_int.h"

int64_t w2v_file_pwrite_raw(int fd, const void *buf, uint64_t count, uint64_t off); /* w2v_block.c */

enum job_kind {
	JOB_INLINE,   /* small: data right after the struct */
	JOB_POOLED,   /* a pool buffer of POOL_BUF bytes; later writes that continue it are appended */
};

struct job {
	struct job *next;
	uint64_t off, len;
	enum job_kind kind;
	uint8_t *data;  /* JOB_POOLED: aligned for direct writes */
};

#define POOL_MIN 4096u         /* writes this big or bigger take a pool buffer, while there are some */
#define POOL_BUF (1u << 20)    /* the size of a pool buffer; larger writes are split into such jobs */
#define DIO_ALIGN 4096u        /* offset, length and buffer alignment of a direct write */
#define DIO_MIN (256u << 10)   /* smaller writes go through the page cache (see above) */
#define MIN(a, b) ((a) < (b) ? (a) : (b))

#define MAX_THREADS 4

struct w2v_writer {
	pthread_t thread[MAX_THREADS];
	int nthreads;
	pthread_mutex_t lock;
	pthread_cond_t more, room;
	struct job *head, *tail;
	struct job *writing[MAX_THREADS]; /* what each thread is writing now, or NULL */
	uint64_t pending, max_pending;
	int stop, error;
	int fd;
	int dfd;          /* the file opened O_DIRECT, or -1 */
	int durable;      /* the file is to be synced: start the writeback of buffered megabytes early */
	struct w2v_stats *stats; /* the disk's: direct writes are counted there (atomically) */
	int *host_errno;  /* the disk's: a failed write is kept there too (w2v_host_error) */
	struct job *pool; /* free pool buffers (struct job with POOL_BUF of data) */
	uint64_t pooled_out, max_pooled; /* pool buffers queued or being written, and the most there may be */
	int draining;     /* callers waiting for the queue to empty */
	int waiting;      /* callers waiting for room in it */
};

struct writer_thread { struct w2v_writer *w; int id; };

/* Is j the last queued job, with room for the writes that continue it?  Then it waits (with
 * w->lock held): the next write either joins it or queues behind it, and a drain takes it. */
static int may_grow(const struct w2v_writer *w, const struct job *j)
{
	return j == w->tail && j->kind == JOB_POOLED && j->len < POOL_BUF && !w->stop && !w->draining &&
	       !w->waiting;
}

/* Does a job being written touch [off, off + len)?  (with w->lock held) */
static int in_flight(const struct w2v_writer *w, uint64_t off, uint64_t len)
{
	for (int i = 0; i < w->nthreads; i++) {
		const struct job *x = w->writing[i];
		if (x && x->off < off + len && off < x->off + x->len)
			return 1;
	}
	return 0;
}

static void free_job(struct job *j)
{
	if (j->kind != JOB_INLINE)
		free(j->data);
	free(j);
}

static void release(struct w2v_writer *w, struct job *j) /* with w->lock held */
{
	if (j->kind == JOB_POOLED) {
		w->pooled_out--;
		j->next = w->pool;
		w->pool = j;
	} else {
		free_job(j);
	}
}

static struct job *new_job(uint64_t count, enum job_kind kind)
{
	if (kind == JOB_INLINE) {
		struct job *j = malloc(sizeof(*j) + count);
		if (j)
			j->data = (uint8_t *)(j + 1);
		return j;
	}
	struct job *j = malloc(sizeof(*j));
	void *buf = NULL;
	if (!j || posix_memalign(&buf, DIO_ALIGN, POOL_BUF) != 0) {
		free(j);
		return NULL;
	}
	j->data = buf;
	return j;
}

/* One job to the file: direct when it can be, else buffered and its writeback started. */
static int64_t write_job(struct w2v_writer *w, const struct job *j)
{
	int dfd = __atomic_load_n(&w->dfd, __ATOMIC_RELAXED);
	if (dfd >= 0 && j->kind != JOB_INLINE && j->len >= DIO_MIN && (j->off | j->len) % DIO_ALIGN == 0) {
		int64_t r = w2v_file_pwrite_raw(dfd, j->data, j->len, j->off);
		if (r >= 0) {
			__atomic_fetch_add(&w->stats->direct_writes, 1, __ATOMIC_RELAXED);
			__atomic_fetch_add(&w->stats->direct_bytes, j->len, __ATOMIC_RELAXED);
		}
		if (r != -EINVAL)
			return r;
		/* Not for this file system after all: the rest go buffered (dfd is closed at free). */
		__atomic_store_n(&w->dfd, -1 - dfd, __ATOMIC_RELAXED);
	}
	int64_t r = w2v_file_pwrite_raw(w->fd, j->data, j->len, j->off);
	if (r >= 0 && w->durable && j->len == POOL_BUF)   /* a full job */
		sync_file_range(w->fd, j->off, j->len, SYNC_FILE_RANGE_WRITE);
	return r;
}

static void *writer_main(void *arg)
{
	struct writer_thread *t = arg;
	struct w2v_writer *w = t->w;
	int id = t->id;
	free(t);
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while ((!w->head && !w->stop) || (w->head && in_flight(w, w->head->off, w->head->len)) ||
		       (w->head && may_grow(w, w->head)))
			pthread_cond_wait(&w->more, &w->lock);
		if (!w->head && w->stop)
			break;
		struct job *j = w->head;
		w->head = j->next;
		if (!w->head)
			w->tail = NULL;
		w->writing[id] = j;
		pthread_mutex_unlock(&w->lock);
		int64_t r = w->error ? 0 : write_job(w, j);
		pthread_mutex_lock(&w->lock);
		if (r < 0 && !w->error) {
			w->error = (int)-r;
			w2v_note_host_error(w->host_errno, w->error);
		}
		w->pending -= j->len;
		w->writing[id] = NULL;
		release(w, j);
		pthread_cond_broadcast(&w->room);
		pthread_cond_broadcast(&w->more); /* a job that waited for this one may go now */
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Count a caller's wait for the writer that began at a. */
static void count_wait(struct w2v_writer *w, const struct timespec *a)
{
	struct timespec b;
	clock_gettime(CLOCK_MONOTONIC, &b);
	uint64_t ns = (uint64_t)(b.tv_sec - a->tv_sec) * 1000000000u + b.tv_nsec - a->tv_nsec;
	__atomic_fetch_add(&w->stats->writer_waits, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&w->stats->writer_wait_ns, ns, __ATOMIC_RELAXED);
}

int64_t w2v_file_pwrite(w2v_disk *d, const void *buf, uint64_t count, uint64_t off)
{
	struct w2v_writer *w = d->writer;
	if (!w) {
		int64_t r = w2v_file_pwrite_raw(d->p.fd, buf, count, off);
		if (r < 0)
			w2v_note_host_error(&d->host_errno, (int)-r);
		return r;
	}
	if (count > POOL_BUF) {
		for (uint64_t done = 0; done < count; done += POOL_BUF) {
			int64_t r = w2v_file_pwrite(d, (const uint8_t *)buf + done, MIN(POOL_BUF, count - done), off + done);
			if (r < 0)
				return r;
		}
		return count;
	}
	enum job_kind kind = count >= POOL_MIN ? JOB_POOLED : JOB_INLINE;
	pthread_mutex_lock(&w->lock);
	while (!w->error) {
		/* A write that continues the last queued job joins it: the cache writes back line by
		 * line, and this coalesces the lines without copying them anywhere else first. */
		struct job *t = w->tail;
		if (t && t->kind == JOB_POOLED && t->off + t->len == off && t->len + count <= POOL_BUF) {
			memcpy(t->data + t->len, buf, count);
			t->len += count;
			w->pending += count;
			pthread_mutex_unlock(&w->lock);
			return count;
		}
		if ((w->pending && w->pending + count > w->max_pending) ||
		    (kind == JOB_POOLED && w->pooled_out >= w->max_pooled)) {
			/* The last job is written now rather than waiting to grow: it may be what is full. */
			struct timespec a;
			clock_gettime(CLOCK_MONOTONIC, &a);
			w->waiting++;
			pthread_cond_broadcast(&w->more);
			pthread_cond_wait(&w->room, &w->lock);
			w->waiting--;
			count_wait(w, &a);
		} else {
			break;
		}
	}
	struct job *j = NULL;
	if (kind == JOB_POOLED) {
		w->pooled_out++;
		if (w->pool) {
			j = w->pool;
			w->pool = j->next;
		}
	}
	pthread_mutex_unlock(&w->lock);
	if (!j) {
		j = new_job(count, kind);
		if (!j) {
			if (kind == JOB_POOLED) {
				pthread_mutex_lock(&w->lock);
				w->pooled_out--;
				pthread_mutex_unlock(&w->lock);
			}
			return -ENOMEM;
		}
	}
	j->next = NULL;
	j->off = off;
	j->len = count;
	j->kind = kind;
	memcpy(j->data, buf, count);
	pthread_mutex_lock(&w->lock);
	int err = w->error;
	if (!err) {
		if (w->tail)
			w->tail->next = j;
		else
			w->head = j;
		w->tail = j;
		w->pending += count;
		pthread_cond_signal(&w->more);
	} else {
		release(w, j);
	}
	pthread_mutex_unlock(&w->lock);
	return err ? -err : (int64_t)count;
}

/* Does a queued job, or one being written, touch [off, off + len)?  (with w->lock held) */
static int range_busy(const struct w2v_writer *w, uint64_t off, uint64_t len)
{
	if (len > UINT64_MAX - off)
		len = UINT64_MAX - off;
	for (const struct job *j = w->head; j; j = j->next)
		if (j->off < off + len && off < j->off + j->len)
			return 1;
	return in_flight(w, off, len);
}

int w2v_writer_settle(w2v_disk *d, uint64_t off, uint64_t len)
{
	struct w2v_writer *w = d->writer;
	if (!w)
		return 0;
	pthread_mutex_lock(&w->lock);
	if (range_busy(w, off, len) && !w->error) {
		/* The last job is taken rather than left to grow. */
		struct timespec a;
		clock_gettime(CLOCK_MONOTONIC, &a);
		w->draining++;
		pthread_cond_broadcast(&w->more);
		while (range_busy(w, off, len) && !w->error)
			pthread_cond_wait(&w->room, &w->lock);
		w->draining--;
		count_wait(w, &a);
	}
	int err = w->error;
	pthread_mutex_unlock(&w->lock);
	return -err;
}

int w2v_writer_drain(w2v_disk *d)
{
	return w2v_writer_settle(d, 0, UINT64_MAX);
}

void w2v_writer_free(w2v_disk *d)
{
	struct w2v_writer *w = d->writer;
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = 1;
	pthread_cond_broadcast(&w->more);
	pthread_mutex_unlock(&w->lock);
	for (int i = 0; i < w->nthreads; i++)
		pthread_join(w->thread[i], NULL);
	for (struct job *j = w->head, *n; j; j = n) {
		n = j->next;
		free_job(j);
	}
	for (struct job *j = w->pool, *n; j; j = n) {
		n = j->next;
		free_job(j);
	}
	int dfd = w->dfd < -1 ? -1 - w->dfd : w->dfd;
	if (dfd >= 0)
		close(dfd);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->more);
	pthread_cond_destroy(&w->room);
	free(w);
	d->writer = NULL;
}

/* The disk's file again, for direct writes; -1 if /proc or the file system says no. */
static int open_direct(int fd)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
}

int w2v_writer_configure(w2v_disk *d, uint64_t max_pending, int threads, int direct)
{
	if (threads < 1 || threads > MAX_THREADS)
		return -EINVAL;
	pthread_mutex_lock(&d->lock);
	int r = w2v_writer_drain(d);
	w2v_writer_free(d);
	if (max_pending) {
		struct w2v_writer *w = calloc(1, sizeof(*w));
		if (!w) {
			r = r ? r : -ENOMEM;
			goto out;
		}
		w->fd = d->p.fd;
		w->dfd = direct ? open_direct(d->p.fd) : -1;
		w->durable = direct;
		w->stats = &d->stats;
		w->host_errno = &d->host_errno;
		w->max_pending = max_pending;
		w->max_pooled = max_pending / POOL_BUF ? max_pending / POOL_BUF : 1;
		pthread_mutex_init(&w->lock, NULL);
		pthread_cond_init(&w->more, NULL);
		pthread_cond_init(&w->room, NULL);
		d->writer = w;
		for (int i = 0; i < threads; i++) {
			struct writer_thread *t = malloc(sizeof(*t));
			if (t)
				*t = (struct writer_thread){ w, i };
			if (!t || pthread_create(&w->thread[i], NULL, writer_main, t) != 0) {
				free(t);
				w2v_writer_free(d); /* stops and joins the threads already started */
				r = r ? r : -EAGAIN;
				goto out;
			}
			w->nthreads = i + 1;
		}
	}
out:
	pthread_mutex_unlock(&d->lock);
	return r;
}
