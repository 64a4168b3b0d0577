/* Internal to native/: the calls other modules make on what may be a view's descriptor (w2v_vfile.c). */
#ifndef W2V_VFILE_INT_H
#define W2V_VFILE_INT_H
#include <stddef.h>
#include <sys/types.h>
/* open(path, O_RDONLY | O_CLOEXEC), or a descriptor of the view of that name. */
int w2v_vfile_open(const char *path);
/* pread on any descriptor: a view's is served from its extents. */
ssize_t w2v_vfile_pread(int fd, void *buf, size_t count, off_t off);
/* close on any descriptor. */
int w2v_vfile_close(int fd);
#endif
