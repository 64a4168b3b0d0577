#ifndef W2V_HOOKS_H
#define W2V_HOOKS_H
#include <stdint.h>
/* The native hooks in wimlib and libntfs-3g, and whether each is installed (w2v_got.c). */
#define W2V_HOOK_COUNT 5
#define W2V_HOOK_READAHEAD 0      /* libwim: its decompressor, for read-ahead decompression */
#define W2V_HOOK_READ_WINDOW 1    /* libwim: its pread64, for chunks already read and small reads */
#define W2V_HOOK_COMPACT 2        /* libntfs-3g: ntfs_cluster_alloc, compact allocation */
#define W2V_HOOK_CLOCK 3          /* libntfs-3g: clock_gettime, the fixed clock of --seed */
#define W2V_HOOK_VFILE 4          /* libwim: its file calls, to read an ISO's install image in place */

/* A hook's state: installed, not tried yet, or why it is not installed. */
#define W2V_HOOK_INSTALLED 1
#define W2V_HOOK_UNTRIED 0
#define W2V_HOOK_OFF -1           /* W2V_NO_HOOKS is set */
#define W2V_HOOK_NO_LIBRARY -2    /* no loaded object has the soname built against */
#define W2V_HOOK_NO_SLOT -3       /* the library has no PLT slot for the symbol: its build binds it directly */
#define W2V_HOOK_FOREIGN -4       /* the slot leads neither to the function nor to the PLT: someone else's hook */
#define W2V_HOOK_PROTECT -5       /* the slot's page could not be made writable */
#define W2V_HOOK_NOT_RELA -6      /* the library's PLT relocations are not RELA jump slots */
#define W2V_HOOK_FORCED -7        /* W2V_TEST_HOOK_FAIL names the symbol (for the tests only) */
#define W2V_HOOK_NEEDS -8         /* a hook this one needs is not installed */

struct w2v_hook_info {
	const char *name;        /* "readahead", "read-window", "compact-allocation", "clock", "iso-in-place" */
	const char *soname;      /* the library patched, e.g. "libntfs-3g.so.89" */
	const char *failed;      /* the symbol that could not be hooked, or NULL */
	const char *needs;       /* the hook this one needs, or NULL */
	int state;               /* W2V_HOOK_* */
	int slots;               /* how many slots the hook patches */
	int patched;             /* how many of them lead to our functions now, read back from the GOT */
};
/* Install hook i (once per process; its state). */
int w2v_hook_install(int i);
/* What hook i is: 0, or -EINVAL for no such hook. */
int w2v_hook_info(int i, struct w2v_hook_info *out);
/* The k-th symbol whose slot hook i patches, or NULL past the last. */
const char *w2v_hook_symbol(int i, int k);

/* The libraries linked, as built against. */
#define W2V_LIB_COUNT 3
struct w2v_lib_info {
	const char *name;        /* "wimlib", "libntfs-3g", "hivex" */
	const char *soname;      /* the exact soname linked */
	const char *built;       /* the version of the headers built against (pkg-config), or "" */
	const char *path;        /* the file loaded with that soname, or NULL */
};
int w2v_lib_info(int i, struct w2v_lib_info *out);
#endif
