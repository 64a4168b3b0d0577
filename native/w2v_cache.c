/*
 * A bounded write-back cache in front of block translation.
 *
 * libntfs-3g rewrites the same MFT records, index blocks and bitmaps many
 * times while it applies an image.  The cache keeps those in memory in
 * 64 KiB lines and writes them back sorted by offset, coalesced into large
 * writes, when it needs room or at flush.  Each line keeps a valid and a
 * dirty mask per 512-byte sector, so a write never has to read the line
 * first, and a writeback writes only sectors that were written.
 *
 * Large aligned transfers of lines that are not cached (file data) bypass
 * the cache: caching them would only evict metadata.
 *
 * All functions run with d->lock held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "w2v_block_int.h"

#define LINE_SHIFT 16
#define LINE_SIZE (1u << LINE_SHIFT)
#define SEC_SHIFT 9
#define SECS_PER_LINE (LINE_SIZE >> SEC_SHIFT) /* 128 */
#define MASK_WORDS (SECS_PER_LINE / 64)
#define MIN(a, b) ((a) < (b) ? (a) : (b))

struct line {
	uint64_t index;           /* line number: offset >> LINE_SHIFT */
	uint64_t valid[MASK_WORDS];
	uint64_t dirty[MASK_WORDS];
	struct line *hnext;       /* hash chain */
	struct line *prev, *next; /* LRU list, most recent at head */
	uint8_t *data;
};

struct w2v_cache {
	uint64_t max_lines, n_lines;
	struct line **hash;
	uint64_t hash_size;
	struct line *head, *tail;
	struct line *free_lines;  /* recycled line structs with their data */
	uint8_t *arena;           /* the lines' data: max_lines * LINE_SIZE, in huge pages where it can */
	uint64_t arena_size, n_made;
	uint8_t *stage;           /* coalescing buffer for writeback */
	uint64_t stage_size;
};

static uint64_t hash_of(struct w2v_cache *c, uint64_t index)
{
	return (index * 0x9E3779B97F4A7C15ull) >> 20 & (c->hash_size - 1);
}

static struct line *lookup(struct w2v_cache *c, uint64_t index)
{
	for (struct line *l = c->hash[hash_of(c, index)]; l; l = l->hnext)
		if (l->index == index)
			return l;
	return NULL;
}

static void lru_unlink(struct w2v_cache *c, struct line *l)
{
	if (l->prev)
		l->prev->next = l->next;
	else
		c->head = l->next;
	if (l->next)
		l->next->prev = l->prev;
	else
		c->tail = l->prev;
	l->prev = l->next = NULL;
}

static void lru_push_head(struct w2v_cache *c, struct line *l)
{
	l->prev = NULL;
	l->next = c->head;
	if (c->head)
		c->head->prev = l;
	c->head = l;
	if (!c->tail)
		c->tail = l;
}

static void hash_remove(struct w2v_cache *c, struct line *l)
{
	struct line **pp = &c->hash[hash_of(c, l->index)];
	while (*pp != l)
		pp = &(*pp)->hnext;
	*pp = l->hnext;
}

static int mask_any(const uint64_t *m)
{
	for (int i = 0; i < MASK_WORDS; i++)
		if (m[i])
			return 1;
	return 0;
}

static int mask_get(const uint64_t *m, unsigned s) { return (m[s >> 6] >> (s & 63)) & 1; }
static void mask_set(uint64_t *m, unsigned s) { m[s >> 6] |= 1ull << (s & 63); }

/* The bits of sectors [s, e) of word w. */
static uint64_t word_bits(unsigned w, unsigned s, unsigned e)
{
	int lo = (int)s - (int)w * 64, hi = (int)e - (int)w * 64;
	lo = lo < 0 ? 0 : lo;
	hi = hi > 64 ? 64 : hi;
	if (lo >= hi)
		return 0;
	return (hi - lo == 64 ? ~0ull : ((1ull << (hi - lo)) - 1)) << lo;
}

static void mask_set_range(uint64_t *m, unsigned s, unsigned e)
{
	for (unsigned w = 0; w < MASK_WORDS; w++)
		m[w] |= word_bits(w, s, e);
}

static int mask_all(const uint64_t *m, unsigned s, unsigned e)
{
	for (unsigned w = 0; w < MASK_WORDS; w++) {
		uint64_t b = word_bits(w, s, e);
		if ((m[w] & b) != b)
			return 0;
	}
	return 1;
}

static int cmp_line(const void *a, const void *b)
{
	const struct line *x = *(struct line *const *)a, *y = *(struct line *const *)b;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* One coalesced run of the stage buffer to the translation layer. */
static int write_stage(w2v_disk *d, uint64_t start, uint64_t len)
{
	d->stats.cache_writebacks++;
	int64_t r = w2v_xlate_write(d, d->cache->stage, len, start);
	return r < 0 ? (int)r : 0;
}

/* The first run of dirty sectors of l at or after *s, as [*s, *e).  0 when there is none. */
static int next_dirty_run(const struct line *l, unsigned *s, unsigned *e)
{
	while (*s < SECS_PER_LINE && !mask_get(l->dirty, *s))
		(*s)++;
	if (*s == SECS_PER_LINE)
		return 0;
	for (*e = *s; *e < SECS_PER_LINE && mask_get(l->dirty, *e); (*e)++)
		;
	return 1;
}

/*
 * Sort lines by index and write their dirty sectors back, coalescing runs
 * that are contiguous on the virtual disk into one translated write: through
 * the stage buffer, or, when the disk has a writer thread, each run straight
 * from its line (the writer joins contiguous ones in its queue).
 */
static int writeback(w2v_disk *d, struct line **lines, size_t n)
{
	struct w2v_cache *c = d->cache;
	uint64_t run_start = 0, run_len = 0;
	int r;
	qsort(lines, n, sizeof(*lines), cmp_line);
	for (size_t i = 0; i < n; i++) {
		struct line *l = lines[i];
		for (unsigned s = 0, e; next_dirty_run(l, &s, &e); s = e) {
			uint64_t off = (l->index << LINE_SHIFT) + ((uint64_t)s << SEC_SHIFT);
			if (off >= d->p.virtual_size)
				continue;
			uint64_t len = MIN((uint64_t)(e - s) << SEC_SHIFT, d->p.virtual_size - off);
			const uint8_t *src = l->data + ((uint64_t)s << SEC_SHIFT);
			if (d->writer) {
				d->stats.cache_writebacks++;
				int64_t w = w2v_xlate_write(d, src, len, off);
				if (w < 0)
					return (int)w;
				continue;
			}
			if (run_len && (run_start + run_len != off || run_len + len > c->stage_size)) {
				if ((r = write_stage(d, run_start, run_len)) < 0)
					return r;
				run_len = 0;
			}
			if (!run_len)
				run_start = off;
			memcpy(c->stage + run_len, src, len);
			run_len += len;
		}
		memset(l->dirty, 0, sizeof(l->dirty));
	}
	return run_len ? write_stage(d, run_start, run_len) : 0;
}

/* Evict the least recently used eighth of the cache, writing its dirty data back in offset order. */
static int evict(w2v_disk *d)
{
	struct w2v_cache *c = d->cache;
	size_t n = c->max_lines / 8 ? c->max_lines / 8 : 1;
	struct line **victims = malloc(n * sizeof(*victims));
	if (!victims)
		return -ENOMEM;
	size_t k = 0;
	for (struct line *l = c->tail; l && k < n; l = l->prev)
		victims[k++] = l;
	int r = writeback(d, victims, k);
	if (r == 0) {
		for (size_t i = 0; i < k; i++) {
			struct line *l = victims[i];
			lru_unlink(c, l);
			hash_remove(c, l);
			l->hnext = c->free_lines;
			c->free_lines = l;
			c->n_lines--;
		}
	}
	free(victims);
	return r;
}

static struct line *get_line(w2v_disk *d, uint64_t index, int *err)
{
	struct w2v_cache *c = d->cache;
	struct line *l = lookup(c, index);
	if (l) {
		if (c->head != l) {
			lru_unlink(c, l);
			lru_push_head(c, l);
		}
		return l;
	}
	if (c->n_lines >= c->max_lines && (*err = evict(d)) < 0)
		return NULL;
	if (c->free_lines) {
		l = c->free_lines;
		c->free_lines = l->hnext;
	} else {
		/* n_lines < max_lines here, and every line ever made is cached or free: n_made < max_lines */
		l = calloc(1, sizeof(*l));
		if (!l) {
			*err = -ENOMEM;
			return NULL;
		}
		l->data = c->arena + c->n_made++ * LINE_SIZE;
	}
	l->index = index;
	memset(l->valid, 0, sizeof(l->valid));
	memset(l->dirty, 0, sizeof(l->dirty));
	uint64_t h = hash_of(c, index);
	l->hnext = c->hash[h];
	c->hash[h] = l;
	lru_push_head(c, l);
	c->n_lines++;
	return l;
}

/* Make sectors [s, e) of a line valid, reading what is missing from below. */
static int fill(w2v_disk *d, struct line *l, unsigned s, unsigned e)
{
	if (mask_all(l->valid, s, e))
		return 0;   /* the common case: a line read before */
	for (unsigned i = s; i < e; i++) {
		if (mask_get(l->valid, i))
			continue;
		unsigned j = i;
		while (j < e && !mask_get(l->valid, j))
			j++;
		uint64_t off = (l->index << LINE_SHIFT) + ((uint64_t)i << SEC_SHIFT);
		int64_t r = w2v_xlate_read(d, l->data + ((uint64_t)i << SEC_SHIFT), (uint64_t)(j - i) << SEC_SHIFT, off);
		if (r < 0)
			return (int)r;
		for (unsigned k = i; k < j; k++)
			mask_set(l->valid, k);
		i = j;
	}
	return 0;
}

/* Bytes of whole lines from index on, none of them cached, that fit in room
 * (the caller has found line index whole in room and not cached). */
static uint64_t uncached_run(struct w2v_cache *c, uint64_t index, uint64_t room)
{
	uint64_t n = LINE_SIZE;
	while (n + LINE_SIZE <= room && !lookup(c, index + n / LINE_SIZE))
		n += LINE_SIZE;
	return n;
}

int64_t w2v_cache_read(w2v_disk *d, void *buf, uint64_t count, uint64_t offset)
{
	struct w2v_cache *c = d->cache;
	if (offset >= d->p.virtual_size)
		return 0;
	count = MIN(count, d->p.virtual_size - offset);
	uint8_t *p = buf;
	uint64_t done = 0;
	while (done < count) {
		uint64_t off = offset + done;
		uint64_t index = off >> LINE_SHIFT, in = off & (LINE_SIZE - 1);
		uint64_t len = MIN(count - done, LINE_SIZE - in);
		struct line *l = lookup(c, index);
		if (!l && in == 0 && len == LINE_SIZE) {
			/* Whole uncached lines: read them straight through, as one request. */
			uint64_t n = uncached_run(c, index, count - done);
			int64_t r = w2v_xlate_read(d, p + done, n, off);
			if (r < 0)
				return r;
			d->stats.cache_misses++;
			done += n;
			continue;
		}
		int err = 0;
		if (l)
			d->stats.cache_hits++;
		else
			d->stats.cache_misses++;
		if (!l && !(l = get_line(d, index, &err)))
			return err;
		/* Read-allocate the whole line: small metadata reads cluster. */
		unsigned s = 0, e = SECS_PER_LINE;
		if ((err = fill(d, l, s, e)) < 0)
			return err;
		memcpy(p + done, l->data + in, len);
		done += len;
	}
	return count;
}

int64_t w2v_cache_write(w2v_disk *d, const void *buf, uint64_t count, uint64_t offset)
{
	struct w2v_cache *c = d->cache;
	const uint8_t *p = buf;
	uint64_t done = 0;
	while (done < count) {
		uint64_t off = offset + done;
		uint64_t index = off >> LINE_SHIFT, in = off & (LINE_SIZE - 1);
		uint64_t len = MIN(count - done, LINE_SIZE - in);
		struct line *l = lookup(c, index);
		if (!l && in == 0 && len == LINE_SIZE) {
			uint64_t n = uncached_run(c, index, count - done);
			int64_t r = w2v_xlate_write(d, p + done, n, off);
			if (r < 0)
				return r;
			done += n;
			continue;
		}
		int err = 0;
		if (!l && !(l = get_line(d, index, &err)))
			return err;
		unsigned s = in >> SEC_SHIFT, e = (in + len + (1u << SEC_SHIFT) - 1) >> SEC_SHIFT;
		/* Partial sectors at the edges need their old contents first. */
		if ((in & 511) && (err = fill(d, l, s, s + 1)) < 0)
			return err;
		if (((in + len) & 511) && (err = fill(d, l, e - 1, e)) < 0)
			return err;
		memcpy(l->data + in, p + done, len);
		mask_set_range(l->valid, s, e);
		mask_set_range(l->dirty, s, e);
		done += len;
	}
	return count;
}

int w2v_cache_flush(w2v_disk *d)
{
	struct w2v_cache *c = d->cache;
	if (!c || !c->n_lines)
		return 0;
	struct line **dirty = malloc(c->n_lines * sizeof(*dirty));
	if (!dirty)
		return -ENOMEM;
	size_t k = 0;
	for (struct line *l = c->head; l; l = l->next)
		if (mask_any(l->dirty))
			dirty[k++] = l;
	int r = writeback(d, dirty, k);
	free(dirty);
	return r;
}

static void free_chain(struct line *l, int via_hnext)
{
	while (l) {
		struct line *n = via_hnext ? l->hnext : l->next;
		free(l);
		l = n;
	}
}

void w2v_cache_free(w2v_disk *d)
{
	struct w2v_cache *c = d->cache;
	if (!c)
		return;
	free_chain(c->head, 0);
	free_chain(c->free_lines, 1);
	free(c->hash);
	free(c->stage);
	munmap(c->arena, c->arena_size);
	free(c);
	d->cache = NULL;
}

int w2v_cache_configure(w2v_disk *d, uint64_t bytes)
{
	pthread_mutex_lock(&d->lock);
	int r = 0;
	if (d->cache) {
		if ((r = w2v_cache_flush(d)) == 0)
			w2v_cache_free(d);
	}
	if (r == 0 && bytes >= LINE_SIZE) {
		struct w2v_cache *c = calloc(1, sizeof(*c));
		if (!c) {
			r = -ENOMEM;
			goto out;
		}
		c->max_lines = bytes / LINE_SIZE;
		c->hash_size = 1;
		while (c->hash_size < c->max_lines * 2)
			c->hash_size <<= 1;
		c->hash = calloc(c->hash_size, sizeof(*c->hash));
		c->stage_size = 4u << 20;
		c->stage = malloc(c->stage_size);
		/* One mapping for every line, in 2 MiB pages where the kernel has them (madvise): libntfs-3g
		 * touches lines all over the cache, a page or two per call, a million times an apply, and
		 * in a VM each TLB miss walks two sets of page tables.  Pages are touched as lines are made. */
		c->arena_size = c->max_lines * LINE_SIZE;
		c->arena = mmap(NULL, c->arena_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (c->arena == MAP_FAILED)
			c->arena = NULL;
		else
			madvise(c->arena, c->arena_size, MADV_HUGEPAGE);
		if (!c->hash || !c->stage || !c->arena) {
			if (c->arena)
				munmap(c->arena, c->arena_size);
			free(c->hash);
			free(c->stage);
			free(c);
			r = -ENOMEM;
			goto out;
		}
		d->cache = c;
	}
out:
	pthread_mutex_unlock(&d->lock);
	return r;
}
