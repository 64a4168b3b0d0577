#ifndef W2V_VFILE_H
#define W2V_VFILE_H
#include <stdint.h>
#include <sys/types.h>
/*
 * Views: files that wimlib opens by name whose bytes are ranges of another
 * file, such as a Windows ISO's install.wim read from the ISO's extents
 * without a copy (w2v_vfile.c).
 */
typedef struct w2v_view w2v_view;
/* Hook libwim's file calls (open, realpath, read, pread, lseek, close; fstat if it calls it), once
 * per process.  0, or -ENOSYS when one of them cannot be hooked (nothing is then changed). */
int w2v_vfile_install(void);
/* A view named `name` (what wimlib_open_wim is given) of size bytes: the pieces of it, in order,
 * are n extents of len[i] bytes each, at src[i] in the file open on fd (src[i] < 0: zeros).  The
 * lengths must add up to size.  fd is duplicated: the caller keeps its own.  NULL with errno set
 * (EINVAL: bad extents or a name in use; ENOSYS: not installed). */
w2v_view *w2v_view_new(const char *name, int fd, uint64_t size, const int64_t *src, const uint64_t *len,
		       uint32_t n);
/* Read the view's bytes at off, as pread would (short at its end).  -1 with errno set. */
ssize_t w2v_view_pread(w2v_view *v, void *buf, size_t count, uint64_t off);
/* How many descriptors of the view are open (wimlib's, the read-ahead's). */
int w2v_view_open_count(w2v_view *v);
/* Unregister the name; the view is freed once its last descriptor is closed (at once if none is). */
void w2v_view_close(w2v_view *v);
#endif
