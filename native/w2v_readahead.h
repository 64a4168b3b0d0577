#ifndef W2V_READAHEAD_H
#define W2V_READAHEAD_H
#include <stdint.h>
/* Read-ahead decompression of wimlib's chunks on helper threads (w2v_readahead.c). */
typedef struct w2v_readahead w2v_readahead;
struct w2v_readahead_stats {
	uint64_t hits;       /* chunks wimlib took from the helpers */
	uint64_t misses;     /* chunks wimlib decompressed itself while a plan was running */
	uint64_t skipped;    /* planned chunks wimlib did not ask for */
	uint64_t resources;  /* resources in the plan */
	uint64_t waits, wait_ns;  /* how often, and how long, wimlib's thread waited for a helper */
	uint64_t served;     /* wimlib's preads of a chunk answered from a helper's read of it */
	uint64_t helped;     /* planned chunks wimlib's thread decompressed itself instead of waiting */
	uint64_t windowed;   /* wimlib's small adjacent preads answered from one larger read */
	int threads;
	int gave_up;         /* the plan stopped matching and was dropped */
};
/* Hook libwim's calls to its decompressor (once per process, before any WIM is read). 0, or -ENOSYS. */
int w2v_readahead_install(void);
/* Plan the reading of image's compressed resources in the WIM at path (this loads the image's
 * metadata) and set aside about max_bytes for decompressed chunks.  No thread runs yet, and the
 * plan may be made on another thread than the one that extracts.  An image with no chunk to
 * plan (an uncompressed WIM, say) gets a plan for the small-read window alone.  NULL when it
 * cannot run (a pipable WIM, no hooks: wimlib then works alone). */
w2v_readahead *w2v_readahead_plan(struct WIMStruct *wim, int image, const char *path, uint64_t max_bytes);
/* Start threads helpers for the calling thread's wimlib calls.  The number started (0: none,
 * and wimlib decompresses alone, through the window when the plan has no chunks; ra must still
 * be stopped). */
int w2v_readahead_run(w2v_readahead *ra, int threads);
/* Stop the helpers, fill stats (may be NULL) and free ra (may be NULL). */
void w2v_readahead_stop(w2v_readahead *ra, struct w2v_readahead_stats *stats);
#endif
