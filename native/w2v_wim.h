#ifndef W2V_WIM_H
#define W2V_WIM_H
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
#endif
