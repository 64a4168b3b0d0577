#ifndef W2V_WIM_H
#define W2V_WIM_H
#include <stddef.h>
#include <stdint.h>
/* What a wimlib progress message carries, flattened for Python. */
struct w2v_progress {
	int msg;
	uint64_t done, total;     /* bytes */
	uint64_t done2, total2;   /* streams, files or directories, by message */
	const char *path;         /* scan: the current path, when there is one */
};
/* Route a WIM's progress messages to w2v_py_progress with ctx (NULL to stop). */
void w2v_wim_set_progress(struct WIMStruct *wim, void *ctx);
/* Drop libxml2's error messages (wimlib reports the error): for this thread and threads started
 * later.  Returns how many of libxml2's handlers were set (0: libxml2 is not loaded). */
int w2v_quiet_xml(void);
/* The file named `name` (compared without regard to ASCII case) at or below the folder `dir` of
 * image `image` (with recursive, in its subfolders too; of several, the first by path, without
 * regard to case): its path in the image ('/'-separated, into path[path_len]) and the size of its
 * data.  Returns 0 when found, -1 when not (nor `dir`), else a wimlib error code. */
int w2v_wim_find_file(struct WIMStruct *wim, int image, const char *dir, const char *name, int recursive,
		      char *path, size_t path_len, uint64_t *size);
#endif
