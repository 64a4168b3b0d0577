/* Internal to native/: the w2v_disk structure shared by the translation layer and the cache. */
#ifndef W2V_BLOCK_INT_H
#define W2V_BLOCK_INT_H

#include <pthread.h>
#include "w2v_block.h"

struct w2v_cache;
struct w2v_writer;

struct w2v_disk {
	struct w2v_params p;
	uint64_t n_blocks, n_groups;
	uint64_t *data_off;
	uint8_t *state;
	uint64_t *group_off;
	uint8_t **bitmap;          /* per block, loaded on demand (PARTIAL blocks) */
	uint8_t *bitmap_dirty;     /* per block */
	uint64_t *dirty_blocks;    /* table entries changed since w2v_take_dirty_blocks */
	size_t n_dirty_blocks, cap_dirty_blocks;
	uint64_t *dirty_groups;
	size_t n_dirty_groups, cap_dirty_groups;
	uint64_t n_dirty_bitmaps;
	w2v_disk *parent;
	struct w2v_cache *cache;
	struct w2v_writer *writer; /* background pwrite thread (w2v_writer.c), or NULL */
	uint8_t *copy_buf;         /* w2v_copy's buffer, kept between calls (taken atomically), or NULL */
	pthread_mutex_t lock;
	struct w2v_stats stats;
	/* Written before the first w2v_pwrite of this open (w2v_set_first_write), then freed. */
	uint8_t *first_buf[2];
	uint64_t first_off[2];
	uint32_t first_len;
	int first_sync;
	uint32_t *comp_len;        /* per block, for COMPRESSED blocks; NULL until w2v_comp_len */
	uint8_t *z_out, *z_in;     /* the last block inflated (z_blk + 1, 0 = none), and its stream's buffer */
	uint64_t z_blk;
	uint32_t z_in_len;
	int host_errno;            /* the first errno of a failed read, write or resize of the file (sticky) */
};

/* Keep the first host error of d's file (any thread; see w2v_host_error). */
static inline void w2v_note_host_error(int *slot, int err)
{
	int none = 0;
	if (err > 0)
		__atomic_compare_exchange_n(slot, &none, err, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Translation without the cache (w2v_block.c); the cache calls these. */
int64_t w2v_xlate_read(w2v_disk *d, void *buf, uint64_t count, uint64_t offset);
int64_t w2v_xlate_write(w2v_disk *d, const void *buf, uint64_t count, uint64_t offset);

/* File I/O of the translation layer: through the writer thread when there is one. */
int64_t w2v_file_pwrite(w2v_disk *d, const void *buf, uint64_t count, uint64_t off);
int w2v_writer_drain(w2v_disk *d);      /* wait until queued writes are in the file; 0 or -errno */
int w2v_writer_settle(w2v_disk *d, uint64_t off, uint64_t len); /* ... those that touch this range */
void w2v_writer_free(w2v_disk *d);

/* The cache (w2v_cache.c); called with d->lock held. */
int64_t w2v_cache_read(w2v_disk *d, void *buf, uint64_t count, uint64_t offset);
int64_t w2v_cache_write(w2v_disk *d, const void *buf, uint64_t count, uint64_t offset);
int w2v_cache_flush(w2v_disk *d);
void w2v_cache_free(w2v_disk *d);

#endif
