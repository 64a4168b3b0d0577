/*
 * Block translation for wim2vhd's virtual disks: see w2v_block.h.
 *
 * Offsets are virtual unless named file_*.  A "block" is the format's
 * allocation unit (VHD 2 MiB, VHDX 32 MiB by default); a "sector" is the
 * logical sector, the granularity of a differencing disk's bitmaps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <zlib.h>
#include "w2v_block_int.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return a ? (v + a - 1) / a * a : v;
}

/* pread that loops, and reads zeros past the end of the file (holes of a block allocated at the end). */
static int64_t file_pread_raw(int fd, void *buf, uint64_t count, uint64_t off)
{
	uint8_t *p = buf;
	uint64_t done = 0;
	while (done < count) {
		ssize_t r = pread(fd, p + done, count - done, off + done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0) {
			memset(p + done, 0, count - done);
			break;
		}
		done += r;
	}
	return count;
}

int64_t w2v_file_pwrite_raw(int fd, const void *buf, uint64_t count, uint64_t off)
{
	const uint8_t *p = buf;
	uint64_t done = 0;
	while (done < count) {
		ssize_t r = pwrite(fd, p + done, count - done, off + done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += r;
	}
	return count;
}

/* Reads see every queued write: those that touch the range are written first (reads of the file
 * are rare: cache misses, and most are of ranges with no write queued). */
static int64_t disk_pread(w2v_disk *d, void *buf, uint64_t count, uint64_t off)
{
	if (d->writer) {
		int r = w2v_writer_settle(d, off, count);
		if (r < 0)
			return r;
	}
	int64_t r = file_pread_raw(d->p.fd, buf, count, off);
	if (r < 0)
		w2v_note_host_error(&d->host_errno, (int)-r);
	return r;
}

int w2v_host_error(w2v_disk *d)
{
	return __atomic_load_n(&d->host_errno, __ATOMIC_SEQ_CST);
}

/* A failed system call on d's file: kept as its host error, and returned as -errno. */
static int host_fail(w2v_disk *d)
{
	int e = errno;
	w2v_note_host_error(&d->host_errno, e);
	return -e;
}

w2v_disk *w2v_disk_new(const struct w2v_params *p)
{
	w2v_disk *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->p = *p;
	if (!d->p.sector_size)
		d->p.sector_size = 512;
	if (p->block_size) {
		d->n_blocks = (p->virtual_size + p->block_size - 1) / p->block_size;
		d->data_off = calloc(d->n_blocks ? d->n_blocks : 1, sizeof(uint64_t));
		d->state = calloc(d->n_blocks ? d->n_blocks : 1, 1);
		d->bitmap = calloc(d->n_blocks ? d->n_blocks : 1, sizeof(uint8_t *));
		d->bitmap_dirty = calloc(d->n_blocks ? d->n_blocks : 1, 1);
		if (!d->data_off || !d->state || !d->bitmap || !d->bitmap_dirty)
			goto fail;
		if (p->bitmap_mode == W2V_BM_GROUPED_LSB) {
			if (!p->chunk_ratio || !p->group_bytes)
				goto fail;
			d->n_groups = (d->n_blocks + p->chunk_ratio - 1) / p->chunk_ratio;
			d->group_off = calloc(d->n_groups ? d->n_groups : 1, sizeof(uint64_t));
			if (!d->group_off)
				goto fail;
		}
	}
	pthread_mutex_init(&d->lock, NULL);
	return d;
fail:
	free(d->data_off);
	free(d->state);
	free(d->bitmap);
	free(d->bitmap_dirty);
	free(d);
	return NULL;
}

void w2v_disk_free(w2v_disk *d)
{
	if (!d)
		return;
	w2v_cache_free(d);
	w2v_writer_free(d);
	if (d->bitmap)
		for (uint64_t i = 0; i < d->n_blocks; i++)
			free(d->bitmap[i]);
	free(d->bitmap);
	free(d->bitmap_dirty);
	free(d->data_off);
	free(d->state);
	free(d->group_off);
	free(d->dirty_blocks);
	free(d->dirty_groups);
	free(d->copy_buf);
	free(d->first_buf[0]);
	free(d->first_buf[1]);
	free(d->comp_len);
	free(d->z_out);
	free(d->z_in);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

uint64_t *w2v_data_off(w2v_disk *d) { return d->data_off; }
uint8_t *w2v_state(w2v_disk *d) { return d->state; }
uint64_t *w2v_group_off(w2v_disk *d) { return d->group_off; }
uint64_t w2v_n_blocks(w2v_disk *d) { return d->n_blocks; }

uint32_t *w2v_comp_len(w2v_disk *d)
{
	if (!d->comp_len && d->n_blocks)
		d->comp_len = calloc(d->n_blocks, sizeof(uint32_t));
	return d->comp_len;
}
uint64_t w2v_n_groups(w2v_disk *d) { return d->n_groups; }
uint64_t w2v_file_end(w2v_disk *d) { return d->p.file_end; }
void w2v_set_trailer(w2v_disk *d, int present) { d->p.trailer_at_end = present; }
void w2v_set_parent(w2v_disk *d, w2v_disk *parent) { d->parent = parent; }

void w2v_get_stats(w2v_disk *d, struct w2v_stats *out)
{
	pthread_mutex_lock(&d->lock);
	*out = d->stats;
	out->direct_writes = __atomic_load_n(&d->stats.direct_writes, __ATOMIC_RELAXED);
	out->direct_bytes = __atomic_load_n(&d->stats.direct_bytes, __ATOMIC_RELAXED);
	out->data_queries = __atomic_load_n(&d->stats.data_queries, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&d->lock);
}

static int push_index(uint64_t **arr, size_t *n, size_t *cap, uint64_t v)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 256;
		uint64_t *na = realloc(*arr, nc * sizeof(uint64_t));
		if (!na)
			return -ENOMEM;
		*arr = na;
		*cap = nc;
	}
	(*arr)[(*n)++] = v;
	return 0;
}

/* Move up to max entries off the end of a dirty list into out (the list
 * may be reallocated by a writer: *arr is read under the lock). */
static size_t take_index(w2v_disk *d, uint64_t *const *arr, size_t *n, uint64_t *out, size_t max)
{
	pthread_mutex_lock(&d->lock);
	size_t k = MIN(max, *n);
	if (k) /* an empty list may have no array yet: memcpy from NULL is undefined even for 0 bytes */
		memcpy(out, *arr + *n - k, k * sizeof(uint64_t));
	*n -= k;
	pthread_mutex_unlock(&d->lock);
	return k;
}

size_t w2v_take_dirty_blocks(w2v_disk *d, uint64_t *out, size_t max)
{
	return take_index(d, &d->dirty_blocks, &d->n_dirty_blocks, out, max);
}

size_t w2v_take_dirty_groups(w2v_disk *d, uint64_t *out, size_t max)
{
	return take_index(d, &d->dirty_groups, &d->n_dirty_groups, out, max);
}

/* ---- sector bitmaps ---------------------------------------------------- */

static uint64_t bitmap_file_off(w2v_disk *d, uint64_t blk)
{
	if (d->p.bitmap_mode == W2V_BM_INLINE_MSB)
		return d->data_off[blk] - d->p.bitmap_bytes;
	uint64_t g = d->group_off[blk / d->p.chunk_ratio];
	return g ? g + (blk % d->p.chunk_ratio) * (uint64_t)d->p.bitmap_bytes : 0;
}

static inline int bit_get(w2v_disk *d, const uint8_t *bm, uint64_t s)
{
	if (d->p.bitmap_mode == W2V_BM_INLINE_MSB)
		return (bm[s >> 3] >> (7 - (s & 7))) & 1;
	return (bm[s >> 3] >> (s & 7)) & 1;
}

static inline void bit_set(w2v_disk *d, uint8_t *bm, uint64_t s)
{
	if (d->p.bitmap_mode == W2V_BM_INLINE_MSB)
		bm[s >> 3] |= 0x80 >> (s & 7);
	else
		bm[s >> 3] |= 1 << (s & 7);
}

static uint8_t *get_bitmap(w2v_disk *d, uint64_t blk, int *err)
{
	if (d->bitmap[blk])
		return d->bitmap[blk];
	uint8_t *bm = calloc(1, d->p.bitmap_bytes);
	if (!bm) {
		*err = -ENOMEM;
		return NULL;
	}
	uint64_t off = bitmap_file_off(d, blk);
	if (off) {
		int64_t r = disk_pread(d, bm, d->p.bitmap_bytes, off);
		if (r < 0) {
			free(bm);
			*err = (int)r;
			return NULL;
		}
	}
	d->bitmap[blk] = bm;
	return bm;
}

/* ---- reads ------------------------------------------------------------- */

static int64_t read_below(w2v_disk *d, void *buf, uint64_t count, uint64_t off)
{
	w2v_disk *p = d->parent;
	if (!p) {
		memset(buf, 0, count);
		return count;
	}
	/* A parent smaller than the child reads as zeros past its end. */
	uint64_t have = off < p->p.virtual_size ? MIN(count, p->p.virtual_size - off) : 0;
	if (have) {
		int64_t r = w2v_pread(p, buf, have, off);
		if (r < 0)
			return r;
	}
	memset((uint8_t *)buf + have, 0, count - have);
	return count;
}

/* The whole of COMPRESSED block blk, inflated: the last one is kept, as reads come in pieces of a block
 * (4 KiB from NTFS, a sector from a partition table) and each would otherwise inflate it again. */
static const uint8_t *inflated(w2v_disk *d, uint64_t blk, int *err)
{
	uint32_t bs = d->p.block_size, n = d->comp_len ? d->comp_len[blk] : 0;
	if (d->z_blk == blk + 1)
		return d->z_out;
	if (!d->z_out && !(d->z_out = malloc(bs))) {
		*err = -ENOMEM;
		return NULL;
	}
	if (n > d->z_in_len) {
		free(d->z_in);
		if (!(d->z_in = malloc(n))) {
			d->z_in_len = 0;
			*err = -ENOMEM;
			return NULL;
		}
		d->z_in_len = n;
	}
	d->z_blk = 0;
	d->stats.file_reads++;
	int64_t r = disk_pread(d, d->z_in, n, d->data_off[blk]);
	if (r < 0) {
		*err = (int)r;
		return NULL;
	}
	/* Raw deflate (no zlib header); qemu writes a 4 KiB window (wbits -12), and a reader's 32 KiB
	 * window (-15) reads any window size.  The stream must give the whole block, and may end before
	 * the sectors its descriptor counts do. */
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -15) != Z_OK) {
		*err = -ENOMEM;
		return NULL;
	}
	z.next_in = d->z_in;
	z.avail_in = n;
	z.next_out = d->z_out;
	z.avail_out = bs;
	int zr = inflate(&z, Z_FINISH);
	inflateEnd(&z);
	if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || z.avail_out) {
		*err = -EBADMSG; /* a damaged stream: the file's fault (exit 3), not the host's EIO */
		return NULL;
	}
	d->z_blk = blk + 1;
	return d->z_out;
}

static int64_t read_in_block(w2v_disk *d, uint64_t blk, uint64_t in_off, uint8_t *buf, uint64_t len)
{
	uint64_t voff = blk * d->p.block_size + in_off;
	switch (d->state[blk]) {
	case W2V_ST_ABSENT:
		return read_below(d, buf, len, voff);
	case W2V_ST_ZERO:
		memset(buf, 0, len);
		return len;
	case W2V_ST_PRESENT:
		d->stats.file_reads++;
		return disk_pread(d, buf, len, d->data_off[blk] + in_off);
	case W2V_ST_COMPRESSED: {
		int err = 0;
		const uint8_t *z = inflated(d, blk, &err);
		if (!z)
			return err;
		memcpy(buf, z + in_off, len);
		return len;
	}
	default: {
		int err = 0;
		uint8_t *bm = get_bitmap(d, blk, &err);
		if (!bm)
			return err;
		uint64_t ss = d->p.sector_size;
		uint64_t pos = in_off, end = in_off + len;
		while (pos < end) {
			uint64_t s = pos / ss;
			int here = bit_get(d, bm, s);
			uint64_t run_end = (s + 1) * ss;
			while (run_end < end && bit_get(d, bm, run_end / ss) == here)
				run_end += ss;
			run_end = MIN(run_end, end);
			int64_t r;
			if (here) {
				d->stats.file_reads++;
				r = disk_pread(d, buf + (pos - in_off), run_end - pos, d->data_off[blk] + pos);
			} else {
				r = read_below(d, buf + (pos - in_off), run_end - pos, blk * d->p.block_size + pos);
			}
			if (r < 0)
				return r;
			pos = run_end;
		}
		return len;
	}
	}
}

int64_t w2v_xlate_read(w2v_disk *d, void *buf, uint64_t count, uint64_t offset)
{
	if (offset >= d->p.virtual_size)
		return 0;
	count = MIN(count, d->p.virtual_size - offset);
	if (!d->p.block_size) {
		d->stats.file_reads++;
		return disk_pread(d, buf, count, d->p.flat_offset + offset);
	}
	uint8_t *p = buf;
	uint64_t done = 0;
	while (done < count) {
		uint64_t off = offset + done;
		uint64_t blk = off / d->p.block_size, in_off = off % d->p.block_size;
		uint64_t len = MIN(count - done, d->p.block_size - in_off);
		int64_t r = read_in_block(d, blk, in_off, p + done, len);
		if (r < 0)
			return r;
		done += len;
	}
	return count;
}

/* ---- writes ------------------------------------------------------------ */

static int mark_dirty_block(w2v_disk *d, uint64_t blk)
{
	return push_index(&d->dirty_blocks, &d->n_dirty_blocks, &d->cap_dirty_blocks, blk);
}

static void mark_dirty_bitmap(w2v_disk *d, uint64_t blk)
{
	if (!d->bitmap_dirty[blk]) {
		d->bitmap_dirty[blk] = 1;
		d->n_dirty_bitmaps++;
	}
}

/* Why a write of count bytes at offset cannot be done, or 0. */
static int write_refused(w2v_disk *d, uint64_t count, uint64_t offset)
{
	if (!d->p.writable)
		return -EROFS;
	if (offset > d->p.virtual_size || count > d->p.virtual_size - offset)
		return -ENOSPC;
	return 0;
}

/* Room for a new allocation at the end of the file. */
static int64_t alloc_file(w2v_disk *d, uint64_t size, uint64_t lead)
{
	if (d->p.trailer_at_end) {
		/* Cut the VHD footer off first: the new block must read as zeros where it lies. */
		if (ftruncate(d->p.fd, d->p.file_end) < 0)
			return host_fail(d);
		d->p.trailer_at_end = 0;
	}
	/* lead bytes (an inline bitmap) go before the aligned data. */
	uint64_t data = align_up(d->p.file_end + lead, d->p.alloc_align);
	d->p.file_end = data + size;
	d->stats.allocations++;
	return (int64_t)data;
}

static int alloc_group(w2v_disk *d, uint64_t g)
{
	int64_t off = alloc_file(d, d->p.group_bytes, 0);
	if (off < 0)
		return (int)off;
	d->group_off[g] = off;
	/* The group must exist in the file even if it stays all zeros: extend_file() at flush. */
	return push_index(&d->dirty_groups, &d->n_dirty_groups, &d->cap_dirty_groups, g);
}

static int alloc_block(w2v_disk *d, uint64_t blk, int partial)
{
	uint64_t lead = d->p.bitmap_mode == W2V_BM_INLINE_MSB ? d->p.bitmap_bytes : 0;
	int64_t off = alloc_file(d, d->p.block_size, lead);
	if (off < 0)
		return (int)off;
	d->data_off[blk] = off;
	d->state[blk] = partial ? W2V_ST_PARTIAL : W2V_ST_PRESENT;
	if (partial) {
		if (d->p.bitmap_mode == W2V_BM_GROUPED_LSB && !d->group_off[blk / d->p.chunk_ratio]) {
			int r = alloc_group(d, blk / d->p.chunk_ratio);
			if (r < 0)
				return r;
		}
		free(d->bitmap[blk]);
		d->bitmap[blk] = calloc(1, d->p.bitmap_bytes);
		if (!d->bitmap[blk])
			return -ENOMEM;
		mark_dirty_bitmap(d, blk);
	} else if (lead && d->p.fill_bitmap_on_alloc) {
		/* VHD: a dynamic disk's allocated block says every sector is present (as qemu and Hyper-V write it). */
		uint8_t *ones = malloc(lead);
		if (!ones)
			return -ENOMEM;
		memset(ones, 0xff, lead);
		int64_t r = w2v_file_pwrite(d, ones, lead, off - lead);
		free(ones);
		if (r < 0)
			return (int)r;
	}
	/* The file is extended to cover the block at flush (extend_file), not here: an
	 * ftruncate per allocation waits for the writer thread's pwrite on the inode lock,
	 * which cost the apply half a second of 387 allocations.  Until then the block's
	 * unwritten tail lies past the end of the file and reads as zeros (file_pread_raw),
	 * and allocations count from file_end, never from the file's size. */
	return mark_dirty_block(d, blk);
}

/* Copy-up for a partially written sector that still lives in the parent. */
static int fill_sector_from_below(w2v_disk *d, uint64_t blk, uint64_t sector)
{
	uint64_t ss = d->p.sector_size;
	uint8_t stackbuf[4096];
	uint8_t *tmp = ss <= sizeof(stackbuf) ? stackbuf : malloc(ss);
	if (!tmp)
		return -ENOMEM;
	int64_t r = read_below(d, tmp, ss, blk * d->p.block_size + sector * ss);
	if (r >= 0)
		r = w2v_file_pwrite(d, tmp, ss, d->data_off[blk] + sector * ss);
	if (tmp != stackbuf)
		free(tmp);
	return r < 0 ? (int)r : 0;
}

static int is_zero(const uint8_t *p, size_t n);

/* Copy-on-write for a differencing format without sector bitmaps (qcow2 over its backing file):
 * a block allocated over a parent holds all of its data, so the parts of it this write leaves out
 * are copied up from below.  Zeros are not written: the new block reads as zeros where unwritten. */
static int copy_up_around(w2v_disk *d, uint64_t blk, uint64_t in_off, uint64_t len)
{
	uint64_t bs = d->p.block_size, ranges[2][2] = {{0, in_off}, {in_off + len, bs}};
	uint8_t *tmp = malloc(MAX(in_off, bs - in_off - len));
	if (!tmp)
		return -ENOMEM;
	int64_t r = 0;
	for (int i = 0; i < 2 && r >= 0; i++) {
		uint64_t start = ranges[i][0], n = ranges[i][1] - start;
		if (!n)
			continue;
		r = read_below(d, tmp, n, blk * bs + start);
		if (r >= 0 && !is_zero(tmp, n))
			r = w2v_file_pwrite(d, tmp, n, d->data_off[blk] + start);
	}
	free(tmp);
	return r < 0 ? (int)r : 0;
}

static int64_t write_in_block(w2v_disk *d, uint64_t blk, uint64_t in_off, const uint8_t *buf, uint64_t len)
{
	int r;
	if (d->state[blk] == W2V_ST_COMPRESSED)
		return -EROFS; /* qcow2.py opens no image with compressed clusters for writing */
	if (d->state[blk] == W2V_ST_ABSENT || d->state[blk] == W2V_ST_ZERO) {
		/* Over a parent, an absent block becomes partial: unwritten sectors still come from below.
		 * A ZERO block, or one with no parent, reads as zeros where unwritten: the file's holes. */
		int whole = in_off == 0 && len == d->p.block_size;
		int below = d->parent && d->state[blk] == W2V_ST_ABSENT && !whole;
		int partial = below && d->p.bitmap_mode != W2V_BM_NONE;
		r = alloc_block(d, blk, partial);
		if (r < 0)
			return r;
		if (below && !partial && (r = copy_up_around(d, blk, in_off, len)) < 0)
			return r;
	}
	if (d->state[blk] == W2V_ST_PARTIAL) {
		int err = 0;
		uint8_t *bm = get_bitmap(d, blk, &err);
		if (!bm)
			return err;
		uint64_t ss = d->p.sector_size;
		uint64_t first = in_off / ss, last = (in_off + len - 1) / ss;
		/* Head and tail sectors that this write covers only in part must be copied up first. */
		if (in_off % ss && !bit_get(d, bm, first) && (r = fill_sector_from_below(d, blk, first)) < 0)
			return r;
		if ((in_off + len) % ss && !bit_get(d, bm, last) && (last != first || !(in_off % ss)) &&
		    (r = fill_sector_from_below(d, blk, last)) < 0)
			return r;
		d->stats.file_writes++;
		int64_t w = w2v_file_pwrite(d, buf, len, d->data_off[blk] + in_off);
		if (w < 0)
			return w;
		for (uint64_t s = first; s <= last; s++)
			bit_set(d, bm, s);
		mark_dirty_bitmap(d, blk);
		return len;
	}
	d->stats.file_writes++;
	return w2v_file_pwrite(d, buf, len, d->data_off[blk] + in_off);
}

int64_t w2v_xlate_write(w2v_disk *d, const void *buf, uint64_t count, uint64_t offset)
{
	int refused = write_refused(d, count, offset);
	if (refused)
		return refused;
	if (!d->p.block_size) {
		d->stats.file_writes++;
		return w2v_file_pwrite(d, buf, count, d->p.flat_offset + offset);
	}
	const uint8_t *p = buf;
	uint64_t done = 0;
	while (done < count) {
		uint64_t off = offset + done;
		uint64_t blk = off / d->p.block_size, in_off = off % d->p.block_size;
		uint64_t len = MIN(count - done, d->p.block_size - in_off);
		int64_t r = write_in_block(d, blk, in_off, p + done, len);
		if (r < 0)
			return r;
		done += len;
	}
	return count;
}

/* ---- public entry points ----------------------------------------------- */

int64_t w2v_pread(w2v_disk *d, void *buf, uint64_t count, uint64_t offset)
{
	pthread_mutex_lock(&d->lock);
	d->stats.reads++;
	d->stats.read_bytes += count;
	int64_t r = d->cache ? w2v_cache_read(d, buf, count, offset) : w2v_xlate_read(d, buf, count, offset);
	pthread_mutex_unlock(&d->lock);
	return r;
}

static void first_write_clear(w2v_disk *d)
{
	free(d->first_buf[0]);
	free(d->first_buf[1]);
	d->first_buf[0] = d->first_buf[1] = NULL;
	d->first_len = 0;
}

int w2v_set_first_write(w2v_disk *d, const void *a, uint64_t a_off, const void *b, uint64_t b_off,
			uint32_t len, int sync)
{
	pthread_mutex_lock(&d->lock);
	first_write_clear(d);
	int r = 0;
	if (len) {
		d->first_buf[0] = malloc(len);
		d->first_buf[1] = malloc(len);
		if (!d->first_buf[0] || !d->first_buf[1]) {
			first_write_clear(d);
			r = -ENOMEM;
		} else {
			memcpy(d->first_buf[0], a, len);
			memcpy(d->first_buf[1], b, len);
			d->first_off[0] = a_off;
			d->first_off[1] = b_off;
			d->first_len = len;
			d->first_sync = sync;
		}
	}
	pthread_mutex_unlock(&d->lock);
	return r;
}

int w2v_first_write_pending(w2v_disk *d)
{
	pthread_mutex_lock(&d->lock);
	int r = d->first_len != 0;
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* The pieces of w2v_set_first_write, straight to the file (not through the writer threads). */
static int first_write(w2v_disk *d)
{
	for (int i = 0; i < 2; i++) {
		int64_t r = w2v_file_pwrite_raw(d->p.fd, d->first_buf[i], d->first_len, d->first_off[i]);
		if (r < 0)
			return (int)r;
		if (d->first_sync && fdatasync(d->p.fd) < 0)
			return -errno;
	}
	first_write_clear(d);
	return 0;
}

int64_t w2v_pwrite(w2v_disk *d, const void *buf, uint64_t count, uint64_t offset)
{
	pthread_mutex_lock(&d->lock);
	d->stats.writes++;
	d->stats.write_bytes += count;
	int64_t r = write_refused(d, count, offset);
	if (!r && d->first_len)
		r = first_write(d);
	if (!r)
		r = d->cache ? w2v_cache_write(d, buf, count, offset) : w2v_xlate_write(d, buf, count, offset);
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int flush_bitmaps(w2v_disk *d)
{
	if (!d->n_dirty_bitmaps)
		return 0;
	for (uint64_t blk = 0; blk < d->n_blocks && d->n_dirty_bitmaps; blk++) {
		if (!d->bitmap_dirty[blk])
			continue;
		uint64_t off = bitmap_file_off(d, blk);
		if (!off)
			return -EIO;
		int64_t r = w2v_file_pwrite(d, d->bitmap[blk], d->p.bitmap_bytes, off);
		if (r < 0)
			return (int)r;
		d->bitmap_dirty[blk] = 0;
		d->n_dirty_bitmaps--;
	}
	return 0;
}

/* Make the file cover every allocation, so that other readers find each block in it. */
static int extend_file(w2v_disk *d)
{
	struct stat st;
	if (!d->p.writable)
		return 0;
	if (fstat(d->p.fd, &st) < 0)
		return host_fail(d);
	if ((uint64_t)st.st_size < d->p.file_end && ftruncate(d->p.fd, (off_t)d->p.file_end) < 0)
		return host_fail(d);
	return 0;
}

int w2v_flush(w2v_disk *d)
{
	pthread_mutex_lock(&d->lock);
	int r = d->cache ? w2v_cache_flush(d) : 0;
	if (r == 0)
		r = flush_bitmaps(d);
	if (r == 0 && d->writer)
		r = w2v_writer_drain(d);
	if (r == 0)
		r = extend_file(d);
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* ---- extents ----------------------------------------------------------- */

static int range_has_data(w2v_disk *d, uint64_t start, uint64_t end);

/* Whether the flat file has data in [start, end): SEEK_DATA, where only ENXIO means "none after".
 * Any other failure (EINVAL, EOPNOTSUPP from a file system without it) is taken as data. */
static int flat_has_data(w2v_disk *d, uint64_t start, uint64_t end)
{
	off_t s = lseek(d->p.fd, d->p.flat_offset + start, SEEK_DATA);
	if (s < 0)
		return errno != ENXIO;
	return (uint64_t)s - d->p.flat_offset < end;
}

/* Whether block blk holds data in [start, end) (inside the block) anywhere down the chain: one
 * question to each level below, for this range only, so a chain costs its depth, not more. */
static int block_range_has_data(w2v_disk *d, uint64_t blk, uint64_t start, uint64_t end)
{
	__atomic_fetch_add(&d->stats.data_queries, 1, __ATOMIC_RELAXED);
	uint8_t s = d->state[blk];
	if (s == W2V_ST_PRESENT || s == W2V_ST_PARTIAL || s == W2V_ST_COMPRESSED)
		return 1;
	if (s == W2V_ST_ZERO || !d->parent)
		return 0;
	return range_has_data(d->parent, start, end);
}

static int range_has_data(w2v_disk *d, uint64_t start, uint64_t end)
{
	end = MIN(end, d->p.virtual_size);
	if (start >= end)
		return 0;
	if (!d->p.block_size)
		return flat_has_data(d, start, end);
	uint64_t bs = d->p.block_size;
	for (uint64_t blk = start / bs; blk * bs < end && blk < d->n_blocks; blk++) {
		uint64_t s = MAX(start, blk * bs), e = MIN(end, (blk + 1) * bs);
		if (block_range_has_data(d, blk, s, e))
			return 1;
	}
	return 0;
}

static int block_has_data(w2v_disk *d, uint64_t blk)
{
	return block_range_has_data(d, blk, blk * d->p.block_size, (blk + 1) * d->p.block_size);
}

uint64_t w2v_next_data(w2v_disk *d, uint64_t offset, uint64_t *len)
{
	uint64_t vs = d->p.virtual_size;
	*len = 0;
	if (offset >= vs)
		return vs;
	if (!d->p.block_size) {
		off_t s = lseek(d->p.fd, d->p.flat_offset + offset, SEEK_DATA);
		if (s < 0 && errno == ENXIO)
			return vs; /* no more data */
		if (s < 0) {
			/* SEEK_DATA unsupported or failing here (EINVAL, EOPNOTSUPP...): all of it is data */
			*len = vs - offset;
			return offset;
		}
		off_t e = lseek(d->p.fd, s, SEEK_HOLE);
		uint64_t vstart = s - d->p.flat_offset;
		if (vstart >= vs)
			return vs;
		uint64_t vend = e < 0 ? vs : MIN((uint64_t)e - d->p.flat_offset, vs);
		*len = vend - vstart;
		return vstart;
	}
	uint64_t bs = d->p.block_size;
	uint64_t blk = offset / bs;
	while (blk < d->n_blocks && !block_has_data(d, blk))
		blk++;
	if (blk >= d->n_blocks)
		return vs;
	uint64_t start = blk * bs > offset ? blk * bs : offset;
	uint64_t end_blk = blk + 1;
	while (end_blk < d->n_blocks && block_has_data(d, end_blk))
		end_blk++;
	uint64_t end = MIN(end_blk * bs, vs);
	*len = end - start;
	return start;
}

uint64_t w2v_allocated_bytes(w2v_disk *d)
{
	if (!d->p.block_size)
		return d->p.virtual_size;
	uint64_t n = 0;
	for (uint64_t i = 0; i < d->n_blocks; i++)
		if (d->state[i] == W2V_ST_PRESENT || d->state[i] == W2V_ST_PARTIAL || d->state[i] == W2V_ST_COMPRESSED)
			n++;
	return n * d->p.block_size;
}

static int is_zero(const uint8_t *p, size_t n)
{
	/* n is a multiple of 8 except possibly at the very end of a disk */
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		if (v)
			return 0;
	}
	for (; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

int64_t w2v_copy(w2v_disk *src, uint64_t src_off, w2v_disk *dst, uint64_t dst_off, uint64_t len)
{
	const uint64_t chunk = 4 << 20, unit = 4096;
	/* A convert calls this once per extent of the source: a fresh 4 MiB buffer each time was an
	 * mmap, a page fault per 4 KiB and an munmap, about half of the page faults of a convert. */
	uint8_t *buf = __atomic_exchange_n(&dst->copy_buf, NULL, __ATOMIC_ACQUIRE);
	if (!buf && !(buf = malloc(chunk)))
		return -ENOMEM;
	int64_t written = 0;
	for (uint64_t done = 0; done < len;) {
		uint64_t n = MIN(chunk, len - done);
		int64_t r = w2v_pread(src, buf, n, src_off + done);
		if (r < 0) {
			written = r;
			goto out;
		}
		/* Write runs of non-zero units; zero units stay holes in the target. */
		for (uint64_t u = 0; u < n;) {
			uint64_t ul = MIN(unit, n - u);
			if (is_zero(buf + u, ul)) {
				u += ul;
				continue;
			}
			uint64_t e = u + ul;
			while (e < n && !is_zero(buf + e, MIN(unit, n - e)))
				e += MIN(unit, n - e);
			r = w2v_pwrite(dst, buf + u, e - u, dst_off + done + u);
			if (r < 0) {
				written = r;
				goto out;
			}
			written += e - u;
			u = e;
		}
		done += n;
	}
out:
	buf = __atomic_exchange_n(&dst->copy_buf, buf, __ATOMIC_RELEASE);
	free(buf); /* NULL, unless another copy to dst ran meanwhile */
	return written;
}
