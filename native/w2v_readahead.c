/*
 * Read-ahead decompression: wimlib's chunks decompressed on other cores before
 * wimlib asks for them.
 *
 * wimlib extracts on one thread.  For each blob, in the order of the blobs'
 * resources in the WIM file, it preads each compressed chunk, calls
 * wimlib_decompress() on it and hashes the result with SHA-1.  Decompression
 * is about half of that thread's work (LZX, 32 KiB chunks, in an install.wim).
 *
 * Before an extraction we list the resources the image uses (through wimlib's
 * public wimlib_iterate_dir_tree), sort them as wimlib will read them, and
 * helper threads walk that plan: each reads the next chunk from its own file
 * descriptor and decompresses it with its own wimlib decompressor into a ring
 * of slots, a bounded distance ahead.
 *
 * wimlib's own call to wimlib_decompress goes through libwim's GOT (Debian's
 * libwim calls its exported functions through its PLT), and we point that
 * slot at take_or_decompress() (w2v_got.c).  There, when the next planned
 * chunk was decompressed by the same kind of decompressor from exactly the
 * same compressed bytes (compared in full), we copy its output; otherwise we
 * call the real wimlib_decompress.  Decompression is a pure function of those
 * bytes, so the result is the same either way; wimlib still checks each blob's
 * SHA-1 as before.  A plan that stops matching (another order, another
 * format) costs one comparison per chunk until it is given up.
 *
 * wimlib's pread of a chunk (libwim's GOT slot for pread64, on the thread
 * being served) is answered from a slot whose helper read the same bytes of
 * the same file (same device and inode, offset and length) when there is
 * one, so the chunk crosses the kernel once, not twice.  Small files stored
 * uncompressed, which wimlib reads one after another with a pread each (25k
 * on /usr/share), are answered from a window: the second of two adjacent
 * small reads reads WINDOW bytes, and the reads after it that fall inside
 * are copied from there.  Anything else goes to the real pread.
 *
 * A view's descriptor (w2v_vfile.c: an ISO's install.wim read in place) is
 * read through w2v_vfile_pread, by the helpers and by wimlib alike.
 *
 * Not planned: solid resources (ESD, LZMS; their chunks are large and
 * their tables differ), pipable WIMs, parts of a split WIM other than the
 * one opened.  wimlib decompresses those itself, as before.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wimlib.h>
#include "w2v_got.h"
#include "w2v_readahead.h"
#include "w2v_vfile_int.h"

/* ---- which decompressor is which ----------------------------------------
 * wimlib keeps one decompressor per WIM (struct wimlib_decompressor is
 * opaque); we note the compression type of each as it is created, so that a
 * chunk is only ever taken for a decompressor of the type it was planned for. */

#define MAX_KNOWN 64

static struct known { struct wimlib_decompressor *d; int ctype; size_t max_block; } known[MAX_KNOWN];
static pthread_mutex_t known_lock = PTHREAD_MUTEX_INITIALIZER;

static int hook_create(enum wimlib_compression_type ctype, size_t max_block, struct wimlib_decompressor **out)
{
	int r = wimlib_create_decompressor(ctype, max_block, out);
	if (r == 0) {
		pthread_mutex_lock(&known_lock);
		for (int i = 0; i < MAX_KNOWN; i++) {
			if (!known[i].d) {
				known[i] = (struct known){ *out, (int)ctype, max_block };
				break;
			}
		}
		pthread_mutex_unlock(&known_lock);
	}
	return r;
}

static void hook_free(struct wimlib_decompressor *d)
{
	pthread_mutex_lock(&known_lock);
	for (int i = 0; i < MAX_KNOWN; i++)
		if (known[i].d == d)
			known[i].d = NULL;
	pthread_mutex_unlock(&known_lock);
	wimlib_free_decompressor(d);
}

static int known_ctype(struct wimlib_decompressor *d, size_t *max_block)
{
	int ctype = -1;
	pthread_mutex_lock(&known_lock);
	for (int i = 0; i < MAX_KNOWN; i++) {
		if (known[i].d == d) {
			ctype = known[i].ctype;
			*max_block = known[i].max_block;
			break;
		}
	}
	pthread_mutex_unlock(&known_lock);
	return ctype;
}

/* ---- the plan and the ring ---------------------------------------------- */

struct res { uint64_t offset, size_in_wim, usize; };

enum { SLOT_EMPTY, SLOT_BUSY, SLOT_READY };

struct slot {
	uint64_t seq;           /* the planned chunk held (state != SLOT_EMPTY) */
	uint64_t off;           /* where its compressed bytes are in the file */
	int state, ok;
	int read_ok;            /* cbuf holds the csize bytes at off (even if they did not decompress) */
	uint32_t csize, usize;
	uint8_t *cbuf, *ubuf;
};

#define MAX_THREADS 8
#define WINDOW (256u << 10)     /* bytes read at once for a run of adjacent small reads */
#define WINDOW_READ (16u << 10) /* reads this small or smaller may start a window */
#define LOOKAHEAD 32            /* how far past the head a chunk is looked for */
#define GIVE_UP 64              /* consecutive chunks that matched nothing */

struct w2v_readahead {
	int fd, ctype;
	dev_t dev;               /* the WIM file's identity, to know wimlib's descriptor of it */
	ino_t ino;
	int wim_fd;              /* wimlib's descriptor of it, once seen (-1 before) */
	int other_fd;            /* the last descriptor seen that is not (another part of a split WIM) */
	uint32_t chunk;
	struct res *res;
	size_t nres;
	pthread_t owner;         /* the thread whose wimlib calls are served */
	struct wimlib_decompressor *own_d;  /* the owner's, for the chunks it decompresses ahead */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* the planner: where in the plan the next chunk is */
	size_t ri;
	uint64_t ci, nchunks;    /* chunk index in resource ri, and its chunk count */
	uint64_t *table;         /* resource ri's chunk offsets, relative to its first chunk */
	uint64_t table_bytes;    /* size of its chunk table in the file */
	uint64_t next_seq;
	int plan_done, stop;
	/* the ring */
	struct slot *slots;
	unsigned nslots;
	uint64_t head;           /* the next chunk wimlib is expected to ask for */
	unsigned miss_run;

	pthread_t threads[MAX_THREADS];
	int nthreads;
	struct w2v_readahead_stats stats;

	/* the owner thread's alone: the window (WINDOW bytes of the file from win_off, win_len of them
	 * read), and where its last read of the WIM file ended */
	uint8_t *win;
	uint64_t win_off, win_len, last_end;
};

static struct w2v_readahead *active;

/* Load resource ri's chunk table (with ra->lock held).  0, or -1 to skip the resource. */
static int load_table(struct w2v_readahead *ra)
{
	const struct res *r = &ra->res[ra->ri];
	uint64_t n = (r->usize + ra->chunk - 1) / ra->chunk;
	unsigned esize = r->usize > 0xFFFFFFFFull ? 8 : 4;
	uint64_t tbytes = (n - 1) * esize;
	if (tbytes >= r->size_in_wim)
		return -1;
	uint64_t *t = realloc(ra->table, n * sizeof(*t));
	if (!t)
		return -1;
	ra->table = t;
	t[0] = 0;
	if (n > 1) {
		uint8_t *raw = malloc(tbytes);
		if (!raw || w2v_vfile_pread(ra->fd, raw, tbytes, r->offset) != (ssize_t)tbytes) {
			free(raw);
			return -1;
		}
		for (uint64_t i = 1; i < n; i++) {
			const uint8_t *e = raw + (i - 1) * esize;
			uint64_t v = 0;
			for (unsigned b = 0; b < esize; b++)
				v |= (uint64_t)e[b] << (8 * b);   /* little-endian */
			t[i] = v;
		}
		free(raw);
	}
	ra->nchunks = n;
	ra->table_bytes = tbytes;
	ra->ci = 0;
	return 0;
}

/* The next planned chunk that wimlib will decompress (with ra->lock held).  0, or -1 at the end. */
static int plan_next(struct w2v_readahead *ra, uint64_t *off, uint32_t *csize, uint32_t *usize)
{
	for (;;) {
		if (ra->ri >= ra->nres)
			return -1;
		if (ra->nchunks == 0 && load_table(ra) != 0) {
			ra->ri++;
			continue;
		}
		if (ra->ci >= ra->nchunks) {
			ra->ri++;
			ra->nchunks = 0;
			continue;
		}
		const struct res *r = &ra->res[ra->ri];
		uint64_t i = ra->ci++;
		uint64_t data = r->size_in_wim - ra->table_bytes;
		uint64_t start = ra->table[i];
		uint64_t end = i + 1 < ra->nchunks ? ra->table[i + 1] : data;
		uint64_t us = i + 1 < ra->nchunks || r->usize % ra->chunk == 0 ? ra->chunk : r->usize % ra->chunk;
		if (end <= start || end > data || end - start > us) {
			/* A damaged table: leave the resource to wimlib, which will say so. */
			ra->ri++;
			ra->nchunks = 0;
			continue;
		}
		if (end - start == us)
			continue;   /* stored uncompressed: wimlib copies it */
		*off = r->offset + ra->table_bytes + start;
		*csize = (uint32_t)(end - start);
		*usize = (uint32_t)us;
		return 0;
	}
}

/* Claim the next planned chunk and decompress it into its slot with d (called with ra->lock held,
 * which it drops while it works).  1 if it filled a slot, 0 if there was nothing it could take. */
static int fill_one(struct w2v_readahead *ra, struct wimlib_decompressor *d)
{
	if (ra->stop || ra->plan_done || ra->next_seq >= ra->head + ra->nslots)
		return 0;
	uint64_t off;
	uint32_t cs, us;
	if (plan_next(ra, &off, &cs, &us) != 0) {
		ra->plan_done = 1;
		pthread_cond_broadcast(&ra->cond);
		return 0;
	}
	uint64_t seq = ra->next_seq++;
	struct slot *s = &ra->slots[seq % ra->nslots];
	s->seq = seq;
	s->state = SLOT_BUSY;
	s->off = off;
	s->csize = cs;
	s->usize = us;
	pthread_mutex_unlock(&ra->lock);
	int read_ok = w2v_vfile_pread(ra->fd, s->cbuf, cs, off) == (ssize_t)cs;
	int ok = read_ok && wimlib_decompress(s->cbuf, cs, s->ubuf, us, d) == 0;
	pthread_mutex_lock(&ra->lock);
	s->read_ok = read_ok;
	s->ok = ok;
	s->state = SLOT_READY;
	pthread_cond_broadcast(&ra->cond);
	return 1;
}

static void *helper(void *arg)
{
	struct w2v_readahead *ra = arg;
	struct wimlib_decompressor *d = NULL;
	int failed = wimlib_create_decompressor(ra->ctype, ra->chunk, &d) != 0;
	pthread_mutex_lock(&ra->lock);
	if (failed) {
		ra->stop = 1;   /* wimlib decompresses everything itself */
		pthread_cond_broadcast(&ra->cond);
	}
	while (!ra->stop && !ra->plan_done)
		if (!fill_one(ra, d))
			pthread_cond_wait(&ra->cond, &ra->lock);
	pthread_mutex_unlock(&ra->lock);
	if (d)
		wimlib_free_decompressor(d);
	return NULL;
}

/* Does slot s hold this very chunk?  (Its bytes are stable while it is READY and not consumed.) */
static int same_chunk(const struct slot *s, const void *cdata, size_t csize, size_t usize)
{
	return s->state == SLOT_READY && s->ok && s->csize == csize && s->usize == usize &&
	       memcmp(s->cbuf, cdata, csize) == 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

/* wimlib's thread needs a chunk that is not ready (with ra->lock held).  Rather than sleep, it
 * decompresses the next planned chunk itself, as a helper would: on two CPUs the one helper is
 * often what wimlib waits for, and the chunk is one wimlib asks for soon after.  It sleeps only
 * when every planned chunk in the ring is taken. */
static void wait_for_helpers(struct w2v_readahead *ra)
{
	uint64_t t = now_ns();
	if (ra->own_d && fill_one(ra, ra->own_d)) {
		ra->stats.helped++;
		return;
	}
	pthread_cond_wait(&ra->cond, &ra->lock);
	ra->stats.waits++;
	ra->stats.wait_ns += now_ns() - t;
}

/* Copy out the planned chunk equal to (cdata, csize), if there is one.  1 if udata was filled. */
static int take(struct w2v_readahead *ra, const void *cdata, size_t csize, void *udata, size_t usize)
{
	pthread_mutex_lock(&ra->lock);
	for (;;) {
		if (ra->stop)
			break;
		if (ra->head >= ra->next_seq) {
			if (ra->plan_done)
				break;
			wait_for_helpers(ra);
			continue;
		}
		struct slot *h = &ra->slots[ra->head % ra->nslots];
		if (h->state != SLOT_READY) {
			wait_for_helpers(ra);
			continue;
		}
		/* The head, then what is already decompressed after it. */
		uint64_t found = UINT64_MAX;
		for (uint64_t k = 0; k < LOOKAHEAD && ra->head + k < ra->next_seq; k++) {
			struct slot *s = &ra->slots[(ra->head + k) % ra->nslots];
			if (s->state != SLOT_READY)
				break;
			pthread_mutex_unlock(&ra->lock);
			int same = same_chunk(s, cdata, csize, usize);
			pthread_mutex_lock(&ra->lock);
			if (same) {
				found = ra->head + k;
				break;
			}
		}
		if (found == UINT64_MAX) {
			ra->stats.misses++;
			if (++ra->miss_run >= GIVE_UP) {
				ra->stop = 1;
				ra->stats.gave_up = 1;
				pthread_cond_broadcast(&ra->cond);
			}
			break;
		}
		struct slot *s = &ra->slots[found % ra->nslots];
		ra->stats.skipped += found - ra->head;
		for (uint64_t q = ra->head; q < found; q++)
			ra->slots[q % ra->nslots].state = SLOT_EMPTY;
		pthread_mutex_unlock(&ra->lock);
		memcpy(udata, s->ubuf, usize);
		pthread_mutex_lock(&ra->lock);
		s->state = SLOT_EMPTY;
		ra->head = found + 1;
		ra->miss_run = 0;
		ra->stats.hits++;
		pthread_cond_broadcast(&ra->cond);
		pthread_mutex_unlock(&ra->lock);
		return 1;
	}
	pthread_mutex_unlock(&ra->lock);
	return 0;
}

static int take_or_decompress(const void *cdata, size_t csize, void *udata, size_t usize,
			      struct wimlib_decompressor *d)
{
	struct w2v_readahead *ra = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
	size_t max_block = 0;
	if (ra && pthread_equal(pthread_self(), ra->owner) &&
	    known_ctype(d, &max_block) == ra->ctype && max_block == ra->chunk &&
	    take(ra, cdata, csize, udata, usize))
		return 0;
	return wimlib_decompress(cdata, csize, udata, usize, d);
}

/* Is fd wimlib's descriptor of the planned WIM file?  (Called on the owner thread only.)  wimlib
 * keeps its WIM files open for the whole extraction, so a descriptor, once known, stays what it is. */
static int is_wim_fd(struct w2v_readahead *ra, int fd)
{
	if (ra->wim_fd >= 0)
		return fd == ra->wim_fd;
	if (fd == ra->other_fd)
		return 0;
	struct stat st;
	if (fstat(fd, &st) != 0 || st.st_dev != ra->dev || st.st_ino != ra->ino) {
		ra->other_fd = fd;
		return 0;
	}
	ra->wim_fd = fd;
	return 1;
}

/* Fill buf from a slot that read exactly these bytes, if one has.  1 if it did. */
static int serve(struct w2v_readahead *ra, void *buf, size_t n, uint64_t off)
{
	struct slot *hit = NULL;
	pthread_mutex_lock(&ra->lock);
	for (uint64_t k = 0; k < LOOKAHEAD && ra->head + k < ra->next_seq; k++) {
		struct slot *s = &ra->slots[(ra->head + k) % ra->nslots];
		if (s->state == SLOT_READY && s->read_ok && s->off == off && s->csize == n) {
			hit = s;
			break;
		}
	}
	pthread_mutex_unlock(&ra->lock);
	if (!hit)
		return 0;
	/* A READY slot changes only when this thread takes it (in take()). */
	memcpy(buf, hit->cbuf, n);
	ra->stats.served++;
	return 1;
}

/* Fill buf from the window, or read a new one when this read follows the last one and is small.
 * 1 if buf was filled, 0 to leave the read to pread.  (Owner thread only.) */
static int windowed(struct w2v_readahead *ra, int fd, void *buf, size_t n, uint64_t off)
{
	if (!(ra->win_len && off >= ra->win_off && off + n <= ra->win_off + ra->win_len)) {
		if (n > WINDOW_READ || off != ra->last_end)
			return 0;
		if (!ra->win && !(ra->win = malloc(WINDOW)))
			return 0;
		ssize_t r = w2v_vfile_pread(fd, ra->win, WINDOW, (off_t)off);
		ra->win_len = 0;
		if (r < (ssize_t)n)
			return 0;   /* an error or the end of the file: pread says so itself */
		ra->win_off = off;
		ra->win_len = (uint64_t)r;
	}
	memcpy(buf, ra->win + (off - ra->win_off), n);
	ra->stats.windowed++;
	return 1;
}

static ssize_t hook_pread(int fd, void *buf, size_t n, off_t off)
{
	struct w2v_readahead *ra = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
	if (ra && n && off >= 0 && pthread_equal(pthread_self(), ra->owner) && is_wim_fd(ra, fd)) {
		uint64_t o = (uint64_t)off;
		int done = serve(ra, buf, n, o) || windowed(ra, fd, buf, n, o);
		ra->last_end = o + n;
		if (done)
			return (ssize_t)n;
	}
	return w2v_vfile_pread(fd, buf, n, off);
}

/* The decompressor's three functions, together: decompressors created before this are not known,
 * and are served by wimlib alone. */
static struct w2v_got_hook decompressor_hooks[] = {
	{ "wimlib_create_decompressor", (void *)wimlib_create_decompressor, (void *)hook_create, NULL, NULL },
	{ "wimlib_free_decompressor", (void *)wimlib_free_decompressor, (void *)hook_free, NULL, NULL },
	{ "wimlib_decompress", (void *)wimlib_decompress, (void *)take_or_decompress, NULL, NULL },
};
struct w2v_got_group w2v_hooks_readahead = {
	"readahead", W2V_SONAME_WIM, decompressor_hooks, 3, NULL, 0, NULL
};
/* Optional: without it, wimlib reads each chunk itself as well, and each small file with a pread. */
static struct w2v_got_hook pread_hooks[] = {
	{ "pread64", (void *)pread64, (void *)hook_pread, NULL, NULL },
};
struct w2v_got_group w2v_hooks_read_window = {
	"read-window", W2V_SONAME_WIM, pread_hooks, 1, &w2v_hooks_readahead, 0, NULL
};

int w2v_readahead_install(void)
{
	int r = w2v_got_install(&w2v_hooks_readahead);
	/* When views are hooked (first: w2v_vfile.c), libwim's pread64 already leads to w2v_vfile_pread,
	 * which hook_pread calls in its turn; the window's slot must find that there. */
	if (r == W2V_HOOK_INSTALLED && w2v_got_state(&w2v_hooks_read_window) == W2V_HOOK_UNTRIED)
		pread_hooks[0].orig = w2v_vfile_install() == 0 ? (void *)w2v_vfile_pread : (void *)pread64;
	w2v_got_install(&w2v_hooks_read_window);
	return r == W2V_HOOK_INSTALLED ? 0 : -ENOSYS;
}

/* ---- the plan: the image's resources, in wimlib's reading order ------------- */

struct collect { struct res *v; size_t n, cap; uint32_t part; int err; };

static int collect_entry(const struct wimlib_dir_entry *e, void *ctx)
{
	struct collect *c = ctx;
	for (uint32_t i = 0; i <= e->num_named_streams; i++) {
		const struct wimlib_resource_entry *r = &e->streams[i].resource;
		if (!r->is_compressed || r->packed || r->is_missing || r->is_metadata ||
		    r->part_number != c->part || r->uncompressed_size == 0)
			continue;
		if (c->n == c->cap) {
			size_t cap = c->cap ? 2 * c->cap : 1024;
			struct res *v = realloc(c->v, cap * sizeof(*v));
			if (!v) {
				c->err = 1;
				return 1;
			}
			c->v = v;
			c->cap = cap;
		}
		c->v[c->n++] = (struct res){ r->offset, r->compressed_size, r->uncompressed_size };
	}
	return 0;
}

static int by_offset(const void *a, const void *b)
{
	uint64_t x = ((const struct res *)a)->offset, y = ((const struct res *)b)->offset;
	return x < y ? -1 : x > y;
}

w2v_readahead *w2v_readahead_plan(struct WIMStruct *wim, int image, const char *path, uint64_t max_bytes)
{
	struct wimlib_wim_info info;
	if (w2v_got_state(&w2v_hooks_readahead) != W2V_HOOK_INSTALLED || wimlib_get_wim_info(wim, &info) != 0 || info.pipable)
		return NULL;
	/* Chunks are planned where a helper can decompress them.  An uncompressed WIM, or an image
	 * with no compressed resource, gets a plan with no chunks: the window for wimlib's small
	 * reads alone (and its metadata loaded here, early, all the same). */
	int chunks = info.chunk_size != 0 && (info.compression_type == WIMLIB_COMPRESSION_TYPE_LZX ||
					      info.compression_type == WIMLIB_COMPRESSION_TYPE_XPRESS ||
					      info.compression_type == WIMLIB_COMPRESSION_TYPE_LZMS);
	struct collect c = { NULL, 0, 0, info.part_number, 0 };
	if (wimlib_iterate_dir_tree(wim, image, WIMLIB_WIM_ROOT_PATH, WIMLIB_ITERATE_DIR_TREE_FLAG_RECURSIVE, collect_entry, &c) != 0 ||
	    c.err) {
		free(c.v);
		return NULL;
	}
	if (!chunks)
		c.n = 0;
	/* wimlib reads each blob once, in the order of its resource in the file (hard links, and
	 * files of the same content, share one). */
	if (c.n) /* no resource collected: c.v is NULL, and qsort's base must not be, even for 0 */
		qsort(c.v, c.n, sizeof(*c.v), by_offset);
	size_t u = 0;
	for (size_t i = 0; i < c.n; i++)
		if (u == 0 || c.v[i].offset != c.v[u - 1].offset)
			c.v[u++] = c.v[i];

	w2v_readahead *ra = calloc(1, sizeof(*ra));
	if (!ra) {
		free(c.v);
		return NULL;
	}
	ra->res = c.v;
	ra->nres = u;
	ra->ctype = u ? info.compression_type : -1;   /* -1: no decompressor's chunks are taken */
	ra->chunk = info.chunk_size;
	ra->plan_done = u == 0;
	ra->stats.resources = u;
	if (u) {
		uint64_t n = max_bytes / (2ull * info.chunk_size);
		ra->nslots = (unsigned)(n < 8 ? 8 : n > 4096 ? 4096 : n);
	}
	ra->fd = w2v_vfile_open(path);   /* a view's name too (w2v_vfile.c) */
	ra->wim_fd = ra->other_fd = -1;
	struct stat st;
	if (ra->fd >= 0 && fstat(ra->fd, &st) == 0) {
		ra->dev = st.st_dev;
		ra->ino = st.st_ino;
	}
	ra->slots = u ? calloc(ra->nslots, sizeof(*ra->slots)) : NULL;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->cond, NULL);
	int ok = ra->fd >= 0 && (ra->slots || !u);
	for (unsigned i = 0; ok && i < ra->nslots; i++) {
		ra->slots[i].cbuf = malloc(info.chunk_size);
		ra->slots[i].ubuf = malloc(info.chunk_size);
		ok = ra->slots[i].cbuf && ra->slots[i].ubuf;
	}
	if (!ok) {
		w2v_readahead_stop(ra, NULL);
		return NULL;
	}
	return ra;
}

int w2v_readahead_run(w2v_readahead *ra, int threads)
{
	if (!ra || threads < 1 || ra->nthreads || __atomic_load_n(&active, __ATOMIC_ACQUIRE))
		return 0;
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	ra->owner = pthread_self();
	if (!ra->nres) {
		/* Nothing to decompress: no helpers, only the window. */
		__atomic_store_n(&active, ra, __ATOMIC_RELEASE);
		return 0;
	}
	if (wimlib_create_decompressor(ra->ctype, ra->chunk, &ra->own_d) != 0)
		ra->own_d = NULL;   /* it then only waits */
	/* The helpers take no signals: Ctrl-C and SIGTERM reach Python's thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (int i = 0; i < threads; i++)
		if (pthread_create(&ra->threads[ra->nthreads], NULL, helper, ra) == 0)
			ra->nthreads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	ra->stats.threads = ra->nthreads;
	if (ra->nthreads)
		__atomic_store_n(&active, ra, __ATOMIC_RELEASE);
	return ra->nthreads;
}

void w2v_readahead_stop(w2v_readahead *ra, struct w2v_readahead_stats *stats)
{
	if (!ra)
		return;
	if (__atomic_load_n(&active, __ATOMIC_ACQUIRE) == ra)
		__atomic_store_n(&active, NULL, __ATOMIC_RELEASE);
	pthread_mutex_lock(&ra->lock);
	ra->stop = 1;
	pthread_cond_broadcast(&ra->cond);
	pthread_mutex_unlock(&ra->lock);
	for (int i = 0; i < ra->nthreads; i++)
		pthread_join(ra->threads[i], NULL);
	if (stats)
		*stats = ra->stats;
	for (unsigned i = 0; ra->slots && i < ra->nslots; i++) {
		free(ra->slots[i].cbuf);
		free(ra->slots[i].ubuf);
	}
	free(ra->slots);
	if (ra->own_d)
		wimlib_free_decompressor(ra->own_d);
	free(ra->table);
	free(ra->res);
	free(ra->win);
	if (ra->fd >= 0)
		w2v_vfile_close(ra->fd);
	pthread_mutex_destroy(&ra->lock);
	pthread_cond_destroy(&ra->cond);
	free(ra);
}
