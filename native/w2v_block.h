/*
 * w2v_block: the hot path of wim2vhd's virtual disks.
 *
 * A w2v_disk translates virtual offsets into file offsets for every format
 * wim2vhd knows.  It knows nothing of headers or on-disk BAT encodings: Python
 * parses those and fills the normalised tables below, and reads back the
 * entries that changed (w2v_take_dirty) when it flushes.  What C owns is the
 * per-I/O work: block lookup, allocation of new blocks at the end of the file,
 * per-sector bitmaps of differencing disks, the parent chain, and (see
 * w2v_cache.c) a bounded write-back cache.
 */
#ifndef W2V_BLOCK_H
#define W2V_BLOCK_H

#include <stdint.h>
#include <stddef.h>

/* Block states, normalised from the formats' own encodings. */
enum {
	W2V_ST_ABSENT = 0,   /* not in this file: parent's data, or zeros */
	W2V_ST_ZERO = 1,     /* reads as zeros, even over a parent */
	W2V_ST_PRESENT = 2,  /* every sector is in this file at data_off */
	W2V_ST_PARTIAL = 3,  /* sectors whose bitmap bit is set are here, others in the parent */
	W2V_ST_COMPRESSED = 4, /* a raw deflate stream of the whole block at data_off, up to comp_len bytes
	                        * (qcow2's compressed clusters); read only: writing one is -EROFS */
};

/* Where the per-sector bitmaps of a block live. */
enum {
	W2V_BM_NONE = 0,        /* no bitmaps (raw, fixed, non-differencing VHDX; qcow2, whose children copy blocks up) */
	W2V_BM_INLINE_MSB = 1,  /* bitmap_bytes just before the block's data; first sector = MSB (VHD) */
	W2V_BM_GROUPED_LSB = 2, /* one group allocation per chunk_ratio blocks; first sector = LSB (VHDX) */
};

struct w2v_params {
	int fd;
	int writable;
	uint64_t virtual_size;
	uint32_t sector_size;      /* logical sector size: the bitmap granularity */
	uint32_t block_size;       /* 0: flat layout, virtual byte 0 at flat_offset */
	uint64_t flat_offset;
	int bitmap_mode;           /* W2V_BM_* */
	uint32_t bitmap_bytes;     /* INLINE: bytes reserved before data; GROUPED: bytes per block */
	uint32_t chunk_ratio;      /* GROUPED: blocks per group */
	uint32_t group_bytes;      /* GROUPED: size of a group allocation */
	uint32_t alloc_align;      /* alignment of new allocations in the file */
	uint64_t file_end;         /* where the next allocation goes */
	int trailer_at_end;        /* a trailer (VHD footer) sits at file_end; cut it before allocating */
	int fill_bitmap_on_alloc;  /* INLINE: write an all-ones bitmap for blocks allocated PRESENT */
};

typedef struct w2v_disk w2v_disk;

w2v_disk *w2v_disk_new(const struct w2v_params *p);
void w2v_disk_free(w2v_disk *d);

/* The tables Python fills after w2v_disk_new and reads when flushing. */
uint64_t *w2v_data_off(w2v_disk *d);   /* n_blocks entries: file offset of each block's data */
uint8_t *w2v_state(w2v_disk *d);       /* n_blocks entries: W2V_ST_* */
uint64_t *w2v_group_off(w2v_disk *d);  /* n_groups entries: file offset of each bitmap group, 0 = none */
uint64_t w2v_n_blocks(w2v_disk *d);
/* n_blocks entries: bytes of each COMPRESSED block's stream; allocated on the first call (NULL: no memory). */
uint32_t *w2v_comp_len(w2v_disk *d);
uint64_t w2v_n_groups(w2v_disk *d);
uint64_t w2v_file_end(w2v_disk *d);
void w2v_set_trailer(w2v_disk *d, int present);

/* Reads fall through to the parent where this disk has no data. */
void w2v_set_parent(w2v_disk *d, w2v_disk *parent);

/* All return bytes done, or -errno. */
int64_t w2v_pread(w2v_disk *d, void *buf, uint64_t count, uint64_t offset);
int64_t w2v_pwrite(w2v_disk *d, const void *buf, uint64_t count, uint64_t offset);

/*
 * Two pieces written to the file, a before b, each made durable (fdatasync) when sync, before the first
 * w2v_pwrite changes anything: a VHDX's headers with new FileWriteGuid and DataWriteGuid ([MS-VHDX]
 * 2.2.2).  len = 0 cancels.  w2v_first_write_pending: 1 until they are written.  0 or -errno.
 */
int w2v_set_first_write(w2v_disk *d, const void *a, uint64_t a_off, const void *b, uint64_t b_off,
			uint32_t len, int sync);
int w2v_first_write_pending(w2v_disk *d);

/*
 * The first errno with which a system call on the disk's own file failed (a read, a write, by the
 * writer threads too, or a resize), or 0.  It stays set.  Errors that are no host error (a write
 * past the virtual size: ENOSPC; a read-only disk: EROFS) leave it alone, so that a caller told
 * only "NTFS-3G failed" (wimlib) or ENOSPC can say whether the host file system or the virtual
 * disk is at fault.
 */
int w2v_host_error(w2v_disk *d);

/* Write dirty cached data and bitmaps to the file (no fsync).  0 or -errno. */
int w2v_flush(w2v_disk *d);

/*
 * Block and group indices whose table entries changed since the last call.
 * Returns how many were stored in out (at most max); call until it returns 0.
 */
size_t w2v_take_dirty_blocks(w2v_disk *d, uint64_t *out, size_t max);
size_t w2v_take_dirty_groups(w2v_disk *d, uint64_t *out, size_t max);

/*
 * The next range at or after offset that holds data anywhere in the chain
 * (not ABSENT all the way down, not ZERO; for flat files, not a hole).
 * Returns its start, or virtual_size when there is none; *len gets its length.
 */
uint64_t w2v_next_data(w2v_disk *d, uint64_t offset, uint64_t *len);

/* Bytes this disk itself holds data for (PRESENT and PARTIAL blocks, or the flat size). */
uint64_t w2v_allocated_bytes(w2v_disk *d);

/*
 * Copy [src_off, src_off+len) of src to dst at dst_off, skipping runs of
 * zeros so that dynamic targets stay sparse.  Returns bytes written, or -errno.
 */
int64_t w2v_copy(w2v_disk *src, uint64_t src_off, w2v_disk *dst, uint64_t dst_off, uint64_t len);

/* Write-back cache (w2v_cache.c).  bytes = 0 turns it off; flushes first. */
int w2v_cache_configure(w2v_disk *d, uint64_t bytes);

/*
 * Background writer threads (w2v_writer.c): file writes are queued, up to
 * max_pending bytes, and written by `threads` threads (1 to 4; overlapping
 * writes stay in order) while the caller goes on (for apply: while wimlib
 * decompresses).  Reads of the file wait for the queue first.  direct: large
 * aligned writes bypass the page cache (O_DIRECT) where the file system allows.
 * max_pending = 0 stops the threads after draining.  0 or -errno.
 */
int w2v_writer_configure(w2v_disk *d, uint64_t max_pending, int threads, int direct);

struct w2v_stats {
	uint64_t reads, writes, read_bytes, write_bytes;
	uint64_t cache_hits, cache_misses, cache_writebacks;
	uint64_t file_reads, file_writes, allocations;
	uint64_t direct_writes, direct_bytes;  /* by the writer threads, bypassing the page cache */
	uint64_t writer_waits, writer_wait_ns; /* callers waiting for the writer: for room, or to read */
	uint64_t data_queries;                 /* w2v_next_data's questions to this disk, one per block */
};
void w2v_get_stats(w2v_disk *d, struct w2v_stats *out);

#endif
