/*
 * Files inside an NTFS volume through libntfs-3g, with no mount: the layer
 * later stages use to put boot files, unattend.xml and registry hives into
 * an applied Windows volume, and the fixtures use to build a Windows-like
 * volume with real metadata (security descriptors, streams, reparse points,
 * hard links, DOS names, attributes, times).
 *
 * The device is whatever ntfs_mount() accepts: an image file path, or a
 * "w2v:N" window registered with w2v_ntfsdev_register(); nothing here
 * cares which.  Every entry point returns -errno on failure and leaves the
 * messages libntfs-3g logged during the call in w2v_ntfsvol_last_error()
 * (libntfs-3g's log goes to a capture buffer, never to stderr).
 *
 * libntfs-3g keeps no table of open inodes: opening one record twice gives
 * two copies that overwrite each other.  So each call opens what it needs
 * (walking the path from the root) and closes it before returning, and
 * paths with "." or ".." components are refused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "w2v_ntfs3g.h"
#include <ntfs-3g/attrib.h>
#include <ntfs-3g/bitmap.h>
#include <ntfs-3g/dir.h>
#include <ntfs-3g/inode.h>
#include <ntfs-3g/layout.h>
#include <ntfs-3g/logging.h>
#include <ntfs-3g/reparse.h>
#include <ntfs-3g/security.h>
#include <ntfs-3g/unistr.h>
#include "w2v_ntfs_files.h"

struct w2v_ntfsvol {
	ntfs_volume *vol;
	struct SECURITY_CONTEXT scx;
	struct PERMISSIONS_CACHE *seccache;
};

/* ---- libntfs-3g's log, captured per thread ------------------------------ */

static __thread char errbuf[1024];
static __thread size_t errlen;

static int log_capture(const char *function, const char *file, int line, u32 level,
		       void *data, const char *format, va_list args)
{
	int saved = errno;
	(void)function; (void)file; (void)line; (void)data;
	if (!(level & (NTFS_LOG_LEVEL_WARNING | NTFS_LOG_LEVEL_ERROR |
		       NTFS_LOG_LEVEL_PERROR | NTFS_LOG_LEVEL_CRITICAL)))
		goto out;
	if (errlen && errlen < sizeof(errbuf) - 3) {
		memcpy(errbuf + errlen, "; ", 2);
		errlen += 2;
	}
	if (errlen < sizeof(errbuf) - 1) {
		int n = vsnprintf(errbuf + errlen, sizeof(errbuf) - errlen, format, args);
		if (n > 0)
			errlen = errlen + (size_t)n < sizeof(errbuf) ? errlen + n : sizeof(errbuf) - 1;
		if (level & NTFS_LOG_LEVEL_PERROR) {
			while (errlen && (errbuf[errlen - 1] == '\n' || errbuf[errlen - 1] == '.'))
				errlen--;
			n = snprintf(errbuf + errlen, sizeof(errbuf) - errlen, ": %s", strerror(saved));
			if (n > 0)
				errlen = errlen + (size_t)n < sizeof(errbuf) ? errlen + n : sizeof(errbuf) - 1;
		}
		while (errlen && (errbuf[errlen - 1] == '\n' || errbuf[errlen - 1] == ' '))
			errlen--;
		errbuf[errlen] = 0;
	}
out:
	errno = saved;
	return 0;
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_install(void)
{
	ntfs_log_set_handler(log_capture);
}

static void begin(void)
{
	pthread_once(&log_once, log_install);
	errlen = 0;
	errbuf[0] = 0;
}

static void note(const char *msg)
{
	if (!errlen)
		snprintf(errbuf, sizeof(errbuf), "%s", msg);
	errlen = strlen(errbuf);
}

const char *w2v_ntfsvol_last_error(void)
{
	return errbuf;
}

void w2v_ntfsvol_free(void *p)
{
	free(p);
}

static int fail(void)
{
	return errno > 0 ? -errno : -EIO;
}

/* Every call that changes the volume starts here: libntfs-3g itself would
 * get halfway on a read-only mount and fail with confusing errors. */
#define WRITABLE(v) do { \
		if (NVolReadOnly((v)->vol)) { \
			note("the volume is open read-only"); \
			return -EROFS; \
		} \
	} while (0)

/* ---- paths ---------------------------------------------------------------- */

/* A path split into components: a copy with separators replaced by NULs. */
struct w2v_path {
	char *buf;
	char *part[256];
	int n;
};

static int path_split(const char *path, struct w2v_path *p)
{
	p->n = 0;
	p->buf = strdup(path ? path : "");
	if (!p->buf)
		return -ENOMEM;
	for (char *c = p->buf; *c; c++)
		if (*c == '\\')
			*c = '/';
	/* strtok_r, not strtok: cffi releases the GIL, so two threads may parse at once. */
	char *save = NULL;
	for (char *tok = strtok_r(p->buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (!strcmp(tok, ".") || !strcmp(tok, "..")) {
			free(p->buf);
			note("\".\" and \"..\" are not allowed in a path");
			return -EINVAL;
		}
		if (p->n == (int)(sizeof(p->part) / sizeof(p->part[0]))) {
			free(p->buf);
			return -ENAMETOOLONG;
		}
		p->part[p->n++] = tok;
	}
	return 0;
}

static void path_free(struct w2v_path *p)
{
	free(p->buf);
}

/* A UTF-8 name as the NTFS UTF-16 name (malloc'ed) and its length. */
static int to_ucs(const char *name, ntfschar **out)
{
	*out = NULL;
	int len = ntfs_mbstoucs(name, out);
	if (len < 0)
		return fail();
	if (len > NTFS_MAX_NAME_LEN) {
		free(*out);
		*out = NULL;
		return -ENAMETOOLONG;
	}
	return len;
}

/* The child called name in dir (dir stays open), or NULL with errno. */
static ntfs_inode *open_child(ntfs_inode *dir, const char *name)
{
	ntfschar *u;
	int len = to_ucs(name, &u);
	if (len < 0) {
		errno = -len;
		return NULL;
	}
	u64 mref = ntfs_inode_lookup_by_name(dir, u, len);
	free(u);
	if (mref == (u64)-1)
		return NULL;
	return ntfs_inode_open(dir->vol, mref);
}

/* Open the first n components of p, walking from the root. */
static ntfs_inode *open_parts(ntfs_volume *vol, struct w2v_path *p, int n)
{
	ntfs_inode *ni = ntfs_inode_open(vol, FILE_root);
	for (int i = 0; ni && i < n; i++) {
		if (!(ni->mrec->flags & MFT_RECORD_IS_DIRECTORY)) {
			ntfs_inode_close(ni);
			errno = ENOTDIR;
			return NULL;
		}
		ntfs_inode *child = open_child(ni, p->part[i]);
		int err = errno;
		ntfs_inode_close(ni);
		errno = err;
		ni = child;
	}
	return ni;
}

static ntfs_inode *open_path(w2v_ntfsvol *v, const char *path, int *rc)
{
	struct w2v_path p;
	*rc = path_split(path, &p);
	if (*rc)
		return NULL;
	ntfs_inode *ni = open_parts(v->vol, &p, p.n);
	if (!ni)
		*rc = fail();
	path_free(&p);
	return ni;
}

static int close_inode(ntfs_inode *ni, int rc)
{
	if (ni && ntfs_inode_close(ni) && !rc)
		rc = fail();
	return rc;
}

/* What an entry point does to the one inode its path names: a negative errno, or a result >= 0. */
typedef int64_t (*inode_fn)(w2v_ntfsvol *v, ntfs_inode *ni, void *arg);

/* The frame of every entry point that works on one existing path: capture libntfs-3g's log, refuse
 * a change to a read-only volume, open the path, run fn, and close the inode (a failure to close
 * is the result when fn succeeded). */
static int64_t on_inode(w2v_ntfsvol *v, const char *path, int change, inode_fn fn, void *arg)
{
	begin();
	if (change)
		WRITABLE(v);
	int rc;
	ntfs_inode *ni = open_path(v, path, &rc);
	if (!ni)
		return rc;
	int64_t r = fn(v, ni, arg);
	rc = close_inode(ni, r < 0 ? (int)r : 0);
	return rc ? rc : r;
}

/* A caller's buffer, for the entry points that read or write one. */
struct w2v_buf {
	void *p;
	size_t n;
};

static int is_dir(ntfs_inode *ni)
{
	return (ni->mrec->flags & MFT_RECORD_IS_DIRECTORY) != 0;
}

/* A name in its directory: what the calls that work on a name rather than
 * on a file (short names, links, unlink, create) start from.  name_open()
 * opens the parent directory of path and turns the last component into
 * UTF-16; on success name_close() undoes it, whatever happened since. */
struct w2v_name {
	struct w2v_path p;
	ntfs_inode *dir;
	ntfschar *u;
	int ulen;
};

static int name_open(w2v_ntfsvol *v, const char *path, struct w2v_name *e)
{
	e->dir = NULL;
	e->u = NULL;
	e->ulen = 0;
	int rc = path_split(path, &e->p);
	if (rc)
		return rc;
	if (e->p.n == 0) {
		note("the root directory has no parent");
		rc = -EINVAL;
	} else if (!(e->dir = open_parts(v->vol, &e->p, e->p.n - 1))) {
		rc = fail();
	} else if (!is_dir(e->dir)) {
		rc = -ENOTDIR;
	} else {
		int len = to_ucs(e->p.part[e->p.n - 1], &e->u);
		if (len < 0)
			rc = len;
		else
			e->ulen = len;
	}
	if (rc) {
		if (e->dir)
			ntfs_inode_close(e->dir);
		path_free(&e->p);
	}
	return rc;
}

/* The file the name refers to, opened, or fail() with *ni NULL. */
static int name_lookup(struct w2v_name *e, ntfs_inode **ni)
{
	*ni = NULL;
	u64 mref = ntfs_inode_lookup_by_name(e->dir, e->u, e->ulen);
	if (mref == (u64)-1 || !(*ni = ntfs_inode_open(e->dir->vol, mref)))
		return fail();
	return 0;
}

/* Close the directory (unless a call that closes it has set e->dir to
 * NULL), then the file ni if not NULL, and free the rest.  The parent goes
 * first, as in w2v_ntfsvol_mkdir; rc is the result so far and the first
 * failure is the one returned. */
static int name_close(struct w2v_name *e, ntfs_inode *ni, int rc)
{
	free(e->u);
	rc = close_inode(e->dir, rc);
	rc = close_inode(ni, rc);
	path_free(&e->p);
	return rc;
}

/* ---- volume --------------------------------------------------------------- */

w2v_ntfsvol *w2v_ntfsvol_mount(const char *device, int flags)
{
	begin();
	w2v_ntfsvol *v = calloc(1, sizeof(*v));
	if (!v) {
		errno = ENOMEM;
		return NULL;
	}
	v->vol = ntfs_mount(device, (flags & W2V_NTFSVOL_READONLY) ? NTFS_MNT_RDONLY : 0);
	if (!v->vol) {
		int err = errno ? errno : EIO;
		free(v);
		errno = err;
		return NULL;
	}
	/* Windows looks names up without regard to case. */
	if (ntfs_set_ignore_case(v->vol)) {
		int err = errno ? errno : EIO;
		ntfs_umount(v->vol, TRUE);
		free(v);
		errno = err;
		return NULL;
	}
	/* The security setters need a context.  uid/gid 0 with no user
	 * mapping: inherited descriptors get BUILTIN\Administrators as owner
	 * and group, as files made by an administrator on Windows would. */
	v->scx.vol = v->vol;
	v->scx.pseccache = &v->seccache;
	v->scx.umask = 0;
	return v;
}

int w2v_ntfsvol_umount(w2v_ntfsvol *v)
{
	begin();
	if (!v)
		return -EINVAL;
	ntfs_destroy_security_context(&v->scx);
	int rc = ntfs_umount(v->vol, FALSE) ? fail() : 0;
	free(v);
	return rc;
}

/* ---- info ----------------------------------------------------------------- */

static int count_names_and_streams(ntfs_inode *ni, struct w2v_ntfs_info *out)
{
	ntfs_attr_search_ctx *ctx = ntfs_attr_get_search_ctx(ni, NULL);
	if (!ctx)
		return fail();
	while (!ntfs_attrs_walk(ctx)) {
		ATTR_RECORD *a = ctx->attr;
		if (a->type == AT_FILE_NAME) {
			FILE_NAME_ATTR *fn = (FILE_NAME_ATTR *)((u8 *)a + le16_to_cpu(a->value_offset));
			if (fn->file_name_type != FILE_NAME_DOS)
				out->nlink++;
		} else if (a->type == AT_DATA) {
			if (a->name_length)
				out->n_streams++;
			else {
				if (a->non_resident) {
					out->size = sle64_to_cpu(a->data_size);
					out->alloc_size = sle64_to_cpu(a->allocated_size);
				} else {
					out->size = le32_to_cpu(a->value_length);
					out->alloc_size = 0;
				}
			}
		}
	}
	ntfs_attr_put_search_ctx(ctx);
	return 0;
}

static int64_t stat_inode(w2v_ntfsvol *v, ntfs_inode *ni, void *arg)
{
	(void)v;
	struct w2v_ntfs_info *out = arg;
	int rc = 0;
	memset(out, 0, sizeof(*out));
	out->mft_no = ni->mft_no;
	out->is_dir = is_dir(ni);
	out->security_id = le32_to_cpu(ni->security_id);
	le32 attr;
	if (ntfs_get_ntfs_attrib(ni, (char *)&attr, sizeof(attr)) < 0)
		rc = fail();
	else
		out->attributes = le32_to_cpu(attr);
	u64 times[4];
	if (!rc && ntfs_inode_get_times(ni, (char *)times, sizeof(times)) < 0)
		rc = fail();
	if (!rc) {
		out->creation_time = times[0];
		out->write_time = times[1];
		out->access_time = times[2];
		out->change_time = times[3];
		rc = count_names_and_streams(ni, out);
	}
	if (!rc && out->is_dir) {
		out->size = 0;
		out->alloc_size = 0;
	}
	if (!rc && (ni->flags & FILE_ATTR_REPARSE_POINT)) {
		/* Reparse data is at most 16 KiB plus its 8-byte header. */
		char *rp = malloc(16 * 1024 + 8);
		int n = rp ? ntfs_get_ntfs_reparse_data(ni, rp, 16 * 1024 + 8) : -ENOMEM;
		if (n >= 4 && n <= 16 * 1024 + 8) {
			le32 tag;
			memcpy(&tag, rp, 4);
			out->reparse_tag = le32_to_cpu(tag);
		}
		free(rp);
	}
	return rc;
}

int w2v_ntfsvol_stat(w2v_ntfsvol *v, const char *path, struct w2v_ntfs_info *out)
{
	return (int)on_inode(v, path, 0, stat_inode, out);

}

/* ---- directories ------------------------------------------------------------ */

static int create_in(w2v_ntfsvol *v, ntfs_inode *dir, const ntfschar *u, int ulen,
		     mode_t type, ntfs_inode **out)
{
	/* Inherit the parent's inheritable ACEs, as Windows does for a new
	 * file; libntfs-3g falls back to a grant-everyone descriptor when
	 * there is nothing to inherit (securid 0). */
	le32 securid = ntfs_inherited_id(&v->scx, dir, S_ISDIR(type));
	*out = ntfs_create(dir, securid, u, ulen, type);
	return *out ? 0 : fail();
}

int w2v_ntfsvol_mkdir(w2v_ntfsvol *v, const char *path, int parents)
{
	begin();
	WRITABLE(v);
	struct w2v_path p;
	int rc = path_split(path, &p);
	if (rc)
		return rc;
	ntfs_inode *dir = ntfs_inode_open(v->vol, FILE_root);
	if (!dir)
		rc = fail();
	if (!rc && p.n == 0 && !parents)
		rc = -EEXIST;
	for (int i = 0; !rc && i < p.n; i++) {
		int last = i == p.n - 1;
		ntfs_inode *child = open_child(dir, p.part[i]);
		if (child) {
			if (!is_dir(child))
				rc = -ENOTDIR;
			else if (last && !parents)
				rc = -EEXIST;
		} else if (errno != ENOENT) {
			rc = fail();
		} else if (!last && !parents) {
			rc = -ENOENT;
		} else {
			ntfschar *u;
			int len = to_ucs(p.part[i], &u);
			rc = len < 0 ? len : create_in(v, dir, u, len, S_IFDIR, &child);
			free(u);
		}
		/* The parent goes first: a dirty child syncs its name into
		 * the parent's index when it closes, opening the parent
		 * afresh, and two live copies of one record must not exist. */
		rc = close_inode(dir, rc);
		dir = child;
	}
	rc = close_inode(dir, rc);
	path_free(&p);
	return rc;
}

struct list_ctx {
	char *buf;
	size_t len, cap;
	int flags;
	int err;
};

static int list_add(struct list_ctx *c, char type, const char *name, size_t n)
{
	if (c->len + n + 2 > c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 4096;
		while (cap < c->len + n + 2)
			cap *= 2;
		char *b = realloc(c->buf, cap);
		if (!b) {
			c->err = ENOMEM;
			return -1;
		}
		c->buf = b;
		c->cap = cap;
	}
	c->buf[c->len++] = type;
	memcpy(c->buf + c->len, name, n);
	c->len += n;
	c->buf[c->len++] = 0;
	return 0;
}

static int list_filldir(void *dirent, const ntfschar *name, const int name_len,
			const int name_type, const s64 pos, const MFT_REF mref,
			const unsigned dt_type)
{
	struct list_ctx *c = dirent;
	(void)pos;
	/* A DOS name is a second entry for a file already listed by its long name. */
	if (name_type == FILE_NAME_DOS)
		return 0;
	if (MREF(mref) < FILE_first_user && !(c->flags & W2V_NTFSVOL_LIST_SYSTEM))
		return 0;
	char *utf8 = NULL;
	int n = ntfs_ucstombs(name, name_len, &utf8, 0);
	if (n < 0) {
		c->err = errno ? errno : EILSEQ;
		return -1;
	}
	int rc = 0;
	if (strcmp(utf8, ".") && strcmp(utf8, "..")) {
		char type = dt_type == NTFS_DT_DIR ? 'd' :
			    (dt_type == NTFS_DT_REG ? 'f' : 'l');
		rc = list_add(c, type, utf8, n);
	}
	free(utf8);
	return rc;
}

/* Close ni, then hand the list over, or free it on failure. */
static int list_done(ntfs_inode *ni, struct list_ctx *c, int rc, char **out, size_t *out_len)
{
	rc = close_inode(ni, rc);
	if (rc) {
		free(c->buf);
		return rc;
	}
	*out = c->buf;
	*out_len = c->len;
	return 0;
}

int w2v_ntfsvol_list(w2v_ntfsvol *v, const char *path, int flags, char **out, size_t *out_len)
{
	begin();
	*out = NULL;
	*out_len = 0;
	int rc;
	ntfs_inode *ni = open_path(v, path, &rc);
	if (!ni)
		return rc;
	if (!is_dir(ni))
		return close_inode(ni, -ENOTDIR);
	struct list_ctx c = { .flags = flags };
	s64 pos = 0;
	/* In ignore-case mode libntfs-3g lowercases the names it lists;
	 * list them as stored, then go back to Windows-style lookups. */
	NVolSetShowSysFiles(v->vol);
	NVolSetShowHidFiles(v->vol);
	NVolSetCaseSensitive(v->vol);
	if (ntfs_readdir(ni, &pos, &c, list_filldir) && !c.err)
		rc = fail();
	NVolClearCaseSensitive(v->vol);
	if (c.err)
		rc = -c.err;
	return list_done(ni, &c, rc, out, out_len);
}

int w2v_ntfsvol_list_streams(w2v_ntfsvol *v, const char *path, char **out, size_t *out_len)
{
	begin();
	*out = NULL;
	*out_len = 0;
	int rc;
	ntfs_inode *ni = open_path(v, path, &rc);
	if (!ni)
		return rc;
	struct list_ctx c = { 0 };
	ntfs_attr_search_ctx *ctx = ntfs_attr_get_search_ctx(ni, NULL);
	if (!ctx)
		rc = fail();
	while (!rc && !ntfs_attr_lookup(AT_DATA, NULL, 0, CASE_SENSITIVE, 0, NULL, 0, ctx)) {
		ATTR_RECORD *a = ctx->attr;
		if (!a->name_length)
			continue;
		char *utf8 = NULL;
		int n = ntfs_ucstombs((ntfschar *)((u8 *)a + le16_to_cpu(a->name_offset)),
				      a->name_length, &utf8, 0);
		if (n < 0) {
			rc = fail();
			break;
		}
		if (list_add(&c, 's', utf8, n))
			rc = -c.err;
		free(utf8);
	}
	if (ctx)
		ntfs_attr_put_search_ctx(ctx);
	return list_done(ni, &c, rc, out, out_len);
}

/* ---- data streams ------------------------------------------------------------ */

/* Open (creating it when asked and missing) the file at path. */
static int open_or_create_file(w2v_ntfsvol *v, const char *path, int create, ntfs_inode **out)
{
	*out = NULL;
	struct w2v_name e;
	int rc = name_open(v, path, &e);
	if (rc)
		return rc;
	u64 mref = ntfs_inode_lookup_by_name(e.dir, e.u, e.ulen);
	if (mref != (u64)-1) {
		*out = ntfs_inode_open(v->vol, mref);
		if (!*out)
			rc = fail();
	} else if (errno != ENOENT) {
		rc = fail();
	} else if (!create) {
		rc = -ENOENT;
	} else {
		rc = create_in(v, e.dir, e.u, e.ulen, S_IFREG, out);
	}
	rc = name_close(&e, NULL, rc);
	if (rc && *out) {
		ntfs_inode_close(*out);
		*out = NULL;
	}
	return rc;
}

/* The stream's name in UTF-16, or AT_UNNAMED for NULL/"". */
static int stream_name(const char *stream, ntfschar **u, int *ulen)
{
	if (!stream || !*stream) {
		*u = NULL;
		*ulen = 0;
		return 0;
	}
	int len = to_ucs(stream, u);
	if (len < 0)
		return len;
	*ulen = len;
	return 0;
}

/* A data stream of ni; the unnamed one of a directory is -EISDIR. */
static ntfs_attr *open_stream(ntfs_inode *ni, const char *stream, int create, int *rc)
{
	if (is_dir(ni) && (!stream || !*stream)) {
		*rc = -EISDIR;
		return NULL;
	}
	ntfschar *u;
	int ulen;
	*rc = stream_name(stream, &u, &ulen);
	if (*rc)
		return NULL;
	ntfschar *name = u ? u : AT_UNNAMED;
	ntfs_attr *na = ntfs_attr_open(ni, AT_DATA, name, ulen);
	if (!na && errno == ENOENT && create) {
		if (ntfs_attr_add(ni, AT_DATA, name, ulen, NULL, 0) == 0)
			na = ntfs_attr_open(ni, AT_DATA, name, ulen);
	}
	if (!na)
		*rc = fail();
	free(u);
	return na;
}

int w2v_ntfsvol_write(w2v_ntfsvol *v, const char *path, const char *stream,
		      const void *buf, uint64_t len, uint64_t offset, int flags)
{
	begin();
	WRITABLE(v);
	ntfs_inode *ni = NULL;
	int rc = open_or_create_file(v, path, !(flags & W2V_NTFSVOL_NOCREATE), &ni);
	if (rc)
		return rc;
	ntfs_attr *na = open_stream(ni, stream, 1, &rc);
	if (!na)
		return close_inode(ni, rc);
	if ((flags & W2V_NTFSVOL_TRUNCATE) && (uint64_t)na->data_size > offset) {
		/* Cut first so replaced data never has to be read back in. */
		if (ntfs_attr_truncate(na, offset))
			rc = fail();
	}
	const char *p = buf;
	uint64_t done = 0;
	while (!rc && done < len) {
		s64 n = ntfs_attr_pwrite(na, offset + done, len - done, p + done);
		if (n <= 0) {
			rc = n < 0 ? fail() : -EIO;
			break;
		}
		done += n;
	}
	ntfs_attr_close(na);
	return close_inode(ni, rc);
}

struct w2v_read {
	const char *stream;
	void *buf;
	uint64_t len, offset;
};

static int64_t read_stream(w2v_ntfsvol *v, ntfs_inode *ni, void *arg)
{
	(void)v;
	struct w2v_read *r = arg;
	int rc;
	ntfs_attr *na = open_stream(ni, r->stream, 0, &rc);
	if (!na)
		return rc;
	int64_t done = 0;
	if (r->offset < (uint64_t)na->data_size) {
		uint64_t want = (uint64_t)na->data_size - r->offset;
		if (want > r->len)
			want = r->len;
		while ((uint64_t)done < want) {
			s64 n = ntfs_attr_pread(na, r->offset + done, want - done, (char *)r->buf + done);
			if (n <= 0) {
				done = n < 0 ? fail() : -EIO;
				break;
			}
			done += n;
		}
	}
	ntfs_attr_close(na);
	return done;
}

int64_t w2v_ntfsvol_read(w2v_ntfsvol *v, const char *path, const char *stream,
			 void *buf, uint64_t len, uint64_t offset)
{
	struct w2v_read r = { stream, buf, len, offset };
	return on_inode(v, path, 0, read_stream, &r);
}

static int64_t stream_size(w2v_ntfsvol *v, ntfs_inode *ni, void *stream)
{
	(void)v;
	int rc;
	ntfs_attr *na = open_stream(ni, stream, 0, &rc);
	if (!na)
		return rc;
	int64_t size = na->data_size;
	ntfs_attr_close(na);
	return size;
}

int64_t w2v_ntfsvol_stream_size(w2v_ntfsvol *v, const char *path, const char *stream)
{
	return on_inode(v, path, 0, stream_size, (void *)stream);
}

static int64_t remove_stream(w2v_ntfsvol *v, ntfs_inode *ni, void *stream)
{
	(void)v;
	ntfschar *u;
	int ulen;
	int rc = stream_name(stream, &u, &ulen);
	if (!rc && ntfs_attr_remove(ni, AT_DATA, u, ulen))
		rc = fail();
	free(u);
	return rc;
}

int w2v_ntfsvol_remove_stream(w2v_ntfsvol *v, const char *path, const char *stream)
{
	if (!stream || !*stream) {
		begin();
		note("only a named stream can be removed");
		return -EINVAL;
	}
	return (int)on_inode(v, path, 1, remove_stream, (void *)stream);
}

/* ---- metadata ------------------------------------------------------------------ */

static int64_t get_attributes(w2v_ntfsvol *v, ntfs_inode *ni, void *out)
{
	(void)v;
	le32 attr;
	if (ntfs_get_ntfs_attrib(ni, (char *)&attr, sizeof(attr)) < 0)
		return fail();
	*(uint32_t *)out = le32_to_cpu(attr);
	return 0;
}

int w2v_ntfsvol_get_attributes(w2v_ntfsvol *v, const char *path, uint32_t *out)
{
	return (int)on_inode(v, path, 0, get_attributes, out);
}

static int64_t set_attributes(w2v_ntfsvol *v, ntfs_inode *ni, void *attributes)
{
	(void)v;
	le32 attr = cpu_to_le32(*(uint32_t *)attributes);
	return ntfs_set_ntfs_attrib(ni, (const char *)&attr, sizeof(attr), 0) ? fail() : 0;
}

int w2v_ntfsvol_set_attributes(w2v_ntfsvol *v, const char *path, uint32_t attributes)
{
	return (int)on_inode(v, path, 1, set_attributes, &attributes);
}

static int64_t get_security(w2v_ntfsvol *v, ntfs_inode *ni, void *arg)
{
	struct w2v_buf *b = arg;
	int n = ntfs_get_ntfs_acl(&v->scx, ni, b->p, b->n);
	return n == 0 ? -ENODATA : n;
}

int w2v_ntfsvol_get_security(w2v_ntfsvol *v, const char *path, void *buf, size_t size)
{
	struct w2v_buf b = { buf, size };
	return (int)on_inode(v, path, 0, get_security, &b);
}

static int64_t set_security(w2v_ntfsvol *v, ntfs_inode *ni, void *arg)
{
	struct w2v_buf *b = arg;
	if (!ntfs_set_ntfs_acl(&v->scx, ni, b->p, b->n, 0))
		return 0;
	int rc = fail();
	if (rc == -EINVAL)
		note("not a valid self-relative security descriptor");
	return rc;
}

int w2v_ntfsvol_set_security(w2v_ntfsvol *v, const char *path, const void *sd, size_t size)
{
	struct w2v_buf b = { (void *)sd, size };
	return (int)on_inode(v, path, 1, set_security, &b);
}

static int64_t get_reparse(w2v_ntfsvol *v, ntfs_inode *ni, void *arg)
{
	(void)v;
	struct w2v_buf *b = arg;
	/* Returns the size; copies only when it fits. */
	return ntfs_get_ntfs_reparse_data(ni, b->p, b->n);
}

int w2v_ntfsvol_get_reparse(w2v_ntfsvol *v, const char *path, void *buf, size_t size)
{
	struct w2v_buf b = { buf, size };
	return (int)on_inode(v, path, 0, get_reparse, &b);
}

static int64_t set_reparse(w2v_ntfsvol *v, ntfs_inode *ni, void *arg)
{
	(void)v;
	struct w2v_buf *b = arg;
	return ntfs_set_ntfs_reparse_data(ni, b->p, b->n, 0) ? fail() : 0;
}

int w2v_ntfsvol_set_reparse(w2v_ntfsvol *v, const char *path, const void *data, size_t size)
{
	struct w2v_buf b = { (void *)data, size };
	return (int)on_inode(v, path, 1, set_reparse, &b);
}

static int64_t remove_reparse(w2v_ntfsvol *v, ntfs_inode *ni, void *arg)
{
	(void)v, (void)arg;
	return ntfs_remove_ntfs_reparse_data(ni) ? fail() : 0;
}

int w2v_ntfsvol_remove_reparse(w2v_ntfsvol *v, const char *path)
{
	return (int)on_inode(v, path, 1, remove_reparse, NULL);
}

int w2v_ntfsvol_get_short_name(w2v_ntfsvol *v, const char *path, char *buf, size_t size)
{
	begin();
	struct w2v_name e;
	int rc = name_open(v, path, &e);
	if (rc)
		return rc;
	ntfs_inode *ni;
	int n = 0;
	rc = name_lookup(&e, &ni);
	if (!rc) {
		n = ntfs_get_ntfs_dos_name(ni, e.dir, buf, size);
		if (n < 0)
			rc = n;
		else if (n == 0)
			rc = -ENODATA;
	}
	rc = name_close(&e, ni, rc);
	return rc ? rc : n;
}

static int set_times(ntfs_inode *ni, int64_t creation, int64_t write, int64_t access, int64_t change)
{
	u64 t[4];
	if (ntfs_inode_get_times(ni, (char *)t, sizeof(t)) < 0)
		return fail();
	if (creation != W2V_NTFSVOL_KEEP_TIME) t[0] = creation;
	if (write != W2V_NTFSVOL_KEEP_TIME) t[1] = write;
	if (access != W2V_NTFSVOL_KEEP_TIME) t[2] = access;
	if (change != W2V_NTFSVOL_KEEP_TIME) t[3] = change;
	/* Sets the first three in $STANDARD_INFORMATION and every
	 * $FILE_NAME, marks them as set (so closing keeps them), and stamps
	 * the MFT change time with "now"... */
	if (ntfs_inode_set_times(ni, (const char *)t, 3 * sizeof(u64), 0))
		return fail();
	/* ...which we then replace with the time asked for, in the same places. */
	ntfs_attr_search_ctx *ctx = ntfs_attr_get_search_ctx(ni, NULL);
	if (!ctx)
		return fail();
	sle64 ct = cpu_to_sle64(t[3]);
	while (!ntfs_attrs_walk(ctx)) {
		ATTR_RECORD *a = ctx->attr;
		if (a->type == AT_STANDARD_INFORMATION) {
			STANDARD_INFORMATION *si = (STANDARD_INFORMATION *)((u8 *)a + le16_to_cpu(a->value_offset));
			si->last_mft_change_time = ct;
			ntfs_inode_mark_dirty(ctx->ntfs_ino);
		} else if (a->type == AT_FILE_NAME) {
			FILE_NAME_ATTR *fn = (FILE_NAME_ATTR *)((u8 *)a + le16_to_cpu(a->value_offset));
			fn->last_mft_change_time = ct;
			ntfs_inode_mark_dirty(ctx->ntfs_ino);
		}
	}
	ntfs_attr_put_search_ctx(ctx);
	ni->last_mft_change_time = ct;
	NInoFileNameSetDirty(ni);
	return 0;
}

static int64_t set_times_of(w2v_ntfsvol *v, ntfs_inode *ni, void *arg)
{
	(void)v;
	const int64_t *t = arg;
	return set_times(ni, t[0], t[1], t[2], t[3]);
}

int w2v_ntfsvol_set_times(w2v_ntfsvol *v, const char *path, int64_t creation,
			  int64_t write, int64_t access, int64_t change)
{
	int64_t t[4] = { creation, write, access, change };
	return (int)on_inode(v, path, 1, set_times_of, t);
}

int w2v_ntfsvol_set_short_name(w2v_ntfsvol *v, const char *path, const char *short_name)
{
	begin();
	WRITABLE(v);
	struct w2v_name e;
	int rc = name_open(v, path, &e);
	if (rc)
		return rc;
	ntfs_inode *ni = NULL;
	u64 dir_ref = MK_MREF(e.dir->mft_no, le16_to_cpu(e.dir->mrec->sequence_number));
	u64 t[4];
	if (ntfs_inode_get_times(e.dir, (char *)t, sizeof(t)) < 0)
		rc = fail();
	if (!rc)
		rc = name_lookup(&e, &ni);
	if (rc)
		return name_close(&e, ni, rc);
	/* Closes both inodes, whatever happens. */
	if (ntfs_set_ntfs_dos_name(ni, e.dir, short_name, strlen(short_name), 0)) {
		rc = fail();
		if (rc == -EINVAL)
			note("not a valid DOS 8.3 name for this file");
	}
	e.dir = NULL;
	/* Setting a DOS name touches the directory's times; put them back,
	 * so a short name never shows as a change to the folder. */
	if (!rc) {
		ntfs_inode *d = ntfs_inode_open(v->vol, dir_ref);
		if (!d)
			rc = fail();
		else
			rc = close_inode(d, set_times(d, t[0], t[1], t[2], t[3]));
	}
	return name_close(&e, NULL, rc);
}

int w2v_ntfsvol_link(w2v_ntfsvol *v, const char *existing, const char *new_path)
{
	begin();
	WRITABLE(v);
	int rc;
	ntfs_inode *ni = open_path(v, existing, &rc);
	if (!ni)
		return rc;
	if (is_dir(ni))
		return close_inode(ni, -EPERM);
	struct w2v_name e;
	rc = name_open(v, new_path, &e);
	if (rc)
		return close_inode(ni, rc);
	if (e.dir->mft_no == ni->mft_no)
		rc = -EINVAL;
	else if (ntfs_inode_lookup_by_name(e.dir, e.u, e.ulen) != (u64)-1)
		rc = -EEXIST;
	else if (errno != ENOENT)
		rc = fail();
	else if (ntfs_link(ni, e.dir, e.u, e.ulen))
		rc = fail();
	rc = name_close(&e, NULL, rc);
	return close_inode(ni, rc);
}

int w2v_ntfsvol_unlink(w2v_ntfsvol *v, const char *path)
{
	begin();
	WRITABLE(v);
	struct w2v_name e;
	int rc = name_open(v, path, &e);
	if (rc)
		return rc;
	ntfs_inode *ni;
	rc = name_lookup(&e, &ni);
	if (!rc && ni->mft_no < FILE_first_user)
		rc = -EPERM;
	else if (!rc && is_dir(ni) && ntfs_check_empty_dir(ni))
		rc = fail();
	if (rc)
		return name_close(&e, ni, rc);
	/* The name may differ in case from the one stored: ntfs_delete looks
	 * for an exact match first, then ignores case, and removes a DOS name
	 * along with its long name.  It closes both inodes. */
	if (ntfs_delete(v->vol, NULL, ni, e.dir, e.u, e.ulen))
		rc = fail();
	e.dir = NULL;
	return name_close(&e, NULL, rc);
}
