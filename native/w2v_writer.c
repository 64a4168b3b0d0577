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
 * thread pwrite()s them in order, then asks the kernel to start writing them
 * back (sync_file_range), so that the final fsync has little left to do.
 * Reads of the file drain the queue first, so they always see what was
 * written.  The first error is kept and returned by the next call that waits.
 *
 * Large jobs (the cache's coalesced writebacks, file data) reuse buffers from
 * a small pool: a fresh malloc of megabytes is an mmap, page faults and an
 * munmap each time, and those serialise both threads on the address space.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "w2v_block_int.h"

int64_t w2v_file_pwrite_raw(int fd, const void *buf, uint64_t count, uint64_t off); /* w2v_block.c */

struct job {
	struct job *next;
	uint64_t off, len;
	int pooled;
	uint8_t data[];
};

#define POOL_MIN (128u << 10)  /* jobs this big or bigger take a pool buffer */
#define POOL_BUF (4u << 20)    /* the size of a pool buffer; larger jobs are malloc'ed */

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
	struct job *pool; /* free pool buffers (struct job with POOL_BUF of data) */
};

struct writer_thread { struct w2v_writer *w; int id; };

/* Is any thread writing a job?  (with w->lock held) */
static int writing_any(const struct w2v_writer *w)
{
	for (int i = 0; i < w->nthreads; i++)
		if (w->writing[i])
			return 1;
	return 0;
}

/* Does job j overlap one that a thread is writing?  (with w->lock held) */
static int overlaps_in_flight(struct w2v_writer *w, const struct job *j)
{
	for (int i = 0; i < w->nthreads; i++) {
		const struct job *x = w->writing[i];
		if (x && x->off < j->off + j->len && j->off < x->off + x->len)
			return 1;
	}
	return 0;
}

static void release(struct w2v_writer *w, struct job *j) /* with w->lock held */
{
	if (j->pooled) {
		j->next = w->pool;
		w->pool = j;
	} else {
		free(j);
	}
}

static void *writer_main(void *arg)
{
	struct writer_thread *t = arg;
	struct w2v_writer *w = t->w;
	int id = t->id;
	free(t);
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while ((!w->head && !w->stop) || (w->head && overlaps_in_flight(w, w->head)))
			pthread_cond_wait(&w->more, &w->lock);
		if (!w->head && w->stop)
			break;
		struct job *j = w->head;
		w->head = j->next;
		if (!w->head)
			w->tail = NULL;
		w->writing[id] = j;
		pthread_mutex_unlock(&w->lock);
		int64_t r = w->error ? 0 : w2v_file_pwrite_raw(w->fd, j->data, j->len, j->off);
		if (r >= 0 && j->len >= (1u << 20))
			sync_file_range(w->fd, j->off, j->len, SYNC_FILE_RANGE_WRITE);
		pthread_mutex_lock(&w->lock);
		if (r < 0 && !w->error)
			w->error = (int)-r;
		w->pending -= j->len;
		w->writing[id] = NULL;
		release(w, j);
		pthread_cond_broadcast(&w->room);
		pthread_cond_broadcast(&w->more); /* a job that waited for this one may go now */
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int64_t w2v_file_pwrite(w2v_disk *d, const void *buf, uint64_t count, uint64_t off)
{
	struct w2v_writer *w = d->writer;
	if (!w)
		return w2v_file_pwrite_raw(d->p.fd, buf, count, off);
	pthread_mutex_lock(&w->lock);
	while (w->pending && w->pending + count > w->max_pending && !w->error)
		pthread_cond_wait(&w->room, &w->lock);
	struct job *j = NULL;
	int pooled = count >= POOL_MIN && count <= POOL_BUF;
	if (pooled && w->pool) {
		j = w->pool;
		w->pool = j->next;
	}
	pthread_mutex_unlock(&w->lock);
	if (!j) {
		j = malloc(sizeof(*j) + (pooled ? POOL_BUF : count));
		if (!j)
			return -ENOMEM;
	}
	j->next = NULL;
	j->off = off;
	j->len = count;
	j->pooled = pooled;
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
	}
	pthread_mutex_unlock(&w->lock);
	if (err) {
		pthread_mutex_lock(&w->lock);
		release(w, j);
		pthread_mutex_unlock(&w->lock);
		return -err;
	}
	return count;
}

int w2v_writer_drain(w2v_disk *d)
{
	struct w2v_writer *w = d->writer;
	if (!w)
		return 0;
	pthread_mutex_lock(&w->lock);
	while ((w->head || writing_any(w)) && !w->error)
		pthread_cond_wait(&w->room, &w->lock);
	int err = w->error;
	pthread_mutex_unlock(&w->lock);
	return -err;
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
		free(j);
	}
	for (struct job *j = w->pool, *n; j; j = n) {
		n = j->next;
		free(j);
	}
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->more);
	pthread_cond_destroy(&w->room);
	free(w);
	d->writer = NULL;
}

int w2v_writer_configure(w2v_disk *d, uint64_t max_pending, int threads)
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
		w->max_pending = max_pending;
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
