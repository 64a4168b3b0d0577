/* Internal to native/: redirecting one library's calls to imported functions, in groups (w2v_got.c). */
#ifndef W2V_GOT_H
#define W2V_GOT_H
#include "w2v_hooks.h"

/* One GOT slot to point elsewhere: the library's calls to `sym` go to `repl` instead of `orig`
 * (orig's address as this library sees it).  slot and saved are w2v_got.c's. */
struct w2v_got_hook {
	const char *sym;
	void *orig, *repl;
	void **slot;   /* the slot, once patched */
	void *saved;   /* what it held before */
};

/* Hooks that work together: installed all or none.  state is 0 until the first w2v_got_install,
 * then W2V_HOOK_INSTALLED or a reason why not (w2v_hooks.h); failed names the symbol at fault. */
struct w2v_got_group {
	const char *name;
	const char *soname;              /* the library, by its exact DT_SONAME */
	struct w2v_got_hook *hooks;
	int n;
	struct w2v_got_group *needs;     /* a group that must be installed first, or NULL */
	int state;
	const char *failed;
};

/* Install g's hooks (once per process; later calls return the first answer): W2V_HOOK_INSTALLED,
 * or why not, with every slot of g as it was.  W2V_NO_HOOKS=1 in the environment: W2V_HOOK_OFF. */
int w2v_got_install(struct w2v_got_group *g);
/* g's state, read atomically. */
int w2v_got_state(const struct w2v_got_group *g);

/* The groups, defined where their replacements are (w2v_readahead.c, w2v_ntfs_device.c, w2v_vfile.c). */
extern struct w2v_got_group w2v_hooks_readahead, w2v_hooks_read_window, w2v_hooks_compact, w2v_hooks_clock,
	w2v_hooks_vfile;
#endif
