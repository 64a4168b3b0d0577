/*
 * Redirecting a shared library's calls to imported functions, in this process
 * only, by rewriting the library's GOT slots for them; and saying whether it
 * worked.
 *
 * A call from libfoo.so to an exported function goes through libfoo's PLT,
 * which jumps to the address in libfoo's GOT slot for that symbol.  Rewriting
 * that one slot changes what libfoo calls and nothing else: other libraries,
 * and our own calls to the function, still reach the original.  This is how
 * native/ wraps libntfs-3g's cluster allocator and clock (w2v_ntfs_device.c) and
 * wimlib's chunk decompression (w2v_readahead.c) and file reads (w2v_vfile.c).
 *
 * A library linked with RELRO and BIND_NOW (Debian's libntfs-3g) has its GOT
 * read-only after relocation: the page is made writable for the store only.
 * A lazily bound library (Debian's libwim) keeps .got.plt writable, and an
 * unresolved slot points back into the library's own PLT.
 *
 * It depends on how the library was linked.  One linked with
 * -Bsymbolic-functions calls its own exported functions directly, with no
 * slot to rewrite; one built with -fno-plt calls through other slots.  Then
 * the hook is not installed, and says why (w2v_hook_info); Python tells the
 * user once what that costs (wim2vhd/hooks.py).  The hooks of one group work
 * together: when one cannot be installed, those installed before it are put
 * back as they were.  W2V_NO_HOOKS=1 installs none.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "w2v_got.h"
#include "w2v_readahead.h"

/* The slots are found through the ELF64 dynamic section, and only where the PLT's relocations are
 * RELA jump slots: x86-64 (R_X86_64_JUMP_SLOT) and AArch64 (R_AARCH64_JUMP_SLOT). */
#if !defined(__ELF__) || !defined(__LP64__)
#error "w2v_got.c reads ELF64 dynamic sections and GOT slots: it needs an ELF64 (LP64) target"
#endif
#if defined(__x86_64__)
#define W2V_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#elif defined(__aarch64__)
#define W2V_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#else
#error "w2v_got.c patches PLT slots relocated by RELA jump-slot relocations: x86-64 or AArch64 only"
#endif

/* The sonames and versions built against (native/build_native.py defines them). */
#ifndef W2V_SONAME_WIM
#error "build with -DW2V_SONAME_WIM=\"libwim.so.N\" (native/build_native.py)"
#endif
#ifndef W2V_SONAME_NTFS3G
#error "build with -DW2V_SONAME_NTFS3G=\"libntfs-3g.so.N\" (native/build_native.py)"
#endif
#ifndef W2V_SONAME_HIVEX
#error "build with -DW2V_SONAME_HIVEX=\"libhivex.so.N\" (native/build_native.py)"
#endif
#include <wimlib.h>
#define W2V_STR_(x) #x
#define W2V_STR(x) W2V_STR_(x)
#define W2V_VERSION_WIM W2V_STR(WIMLIB_MAJOR_VERSION) "." W2V_STR(WIMLIB_MINOR_VERSION) "." \
	W2V_STR(WIMLIB_PATCH_VERSION)
#ifndef W2V_VERSION_NTFS3G
#define W2V_VERSION_NTFS3G ""
#endif
#ifndef W2V_VERSION_HIVEX
#define W2V_VERSION_HIVEX ""
#endif

/* The object loaded under exactly this soname (its DT_SONAME, not its file name). */
struct object {
	const char *soname;
	const char *path;
	ElfW(Addr) base;
	const ElfW(Dyn) *dyn;
	uintptr_t relro_lo, relro_hi;  /* its RELRO range, if any */
	uintptr_t text_lo, text_hi;    /* its executable segment (where lazy PLT stubs are) */
};

static ElfW(Addr) relocated(ElfW(Addr) p, ElfW(Addr) base)
{
	/* The loader may or may not have relocated the dynamic section's pointers in place. */
	return p < base ? p + base : p;
}

static int find_object(struct dl_phdr_info *info, size_t size, void *data)
{
	struct object *o = data;
	(void)size;
	const ElfW(Dyn) *dyn = NULL;
	for (int i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
			dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
	if (!dyn)
		return 0;
	ElfW(Addr) strtab = 0, soname = 0;
	int has_soname = 0;
	for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
		if (d->d_tag == DT_STRTAB)
			strtab = d->d_un.d_ptr;
		else if (d->d_tag == DT_SONAME) {
			soname = d->d_un.d_val;
			has_soname = 1;
		}
	}
	if (!strtab || !has_soname)
		return 0;
	const char *name = (const char *)relocated(strtab, info->dlpi_addr) + soname;
	if (strcmp(name, o->soname) != 0)
		return 0;
	o->path = info->dlpi_name;
	o->base = info->dlpi_addr;
	o->dyn = dyn;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_GNU_RELRO) {
			o->relro_lo = o->base + ph->p_vaddr;
			o->relro_hi = o->base + ph->p_vaddr + ph->p_memsz;
		} else if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
			o->text_lo = o->base + ph->p_vaddr;
			o->text_hi = o->base + ph->p_vaddr + ph->p_memsz;
		}
	}
	return 1;
}

static int load_object(struct object *o, const char *soname)
{
	memset(o, 0, sizeof(*o));
	o->soname = soname;
	dl_iterate_phdr(find_object, o);
	return o->dyn ? 0 : -1;
}

/* The GOT slot of o's PLT relocation for sym: the slot, or NULL with *why set. */
static void **find_slot(const struct object *o, const char *sym, int *why)
{
	ElfW(Addr) jmprel = 0, symtab = 0, strtab = 0;
	size_t relsz = 0;
	long pltrel = -1;
	for (const ElfW(Dyn) *d = o->dyn; d->d_tag != DT_NULL; d++) {
		switch (d->d_tag) {
		case DT_JMPREL: jmprel = d->d_un.d_ptr; break;
		case DT_PLTRELSZ: relsz = d->d_un.d_val; break;
		case DT_PLTREL: pltrel = (long)d->d_un.d_val; break;
		case DT_SYMTAB: symtab = d->d_un.d_ptr; break;
		case DT_STRTAB: strtab = d->d_un.d_ptr; break;
		}
	}
	*why = W2V_HOOK_NO_SLOT;
	if (!jmprel || !symtab || !strtab)
		return NULL;   /* no PLT at all (linked with -z now -fno-plt, say) */
	if (pltrel != DT_RELA) {
		*why = W2V_HOOK_NOT_RELA;
		return NULL;
	}
	const ElfW(Rela) *rel = (const ElfW(Rela) *)relocated(jmprel, o->base);
	const ElfW(Sym) *syms = (const ElfW(Sym) *)relocated(symtab, o->base);
	const char *strs = (const char *)relocated(strtab, o->base);
	for (size_t i = 0; i < relsz / sizeof(*rel); i++) {
		if (strcmp(strs + syms[ELF64_R_SYM(rel[i].r_info)].st_name, sym) != 0)
			continue;
		if (ELF64_R_TYPE(rel[i].r_info) != W2V_R_JUMP_SLOT) {
			*why = W2V_HOOK_NOT_RELA;
			return NULL;
		}
		return (void **)(o->base + rel[i].r_offset);
	}
	return NULL;
}

/* Store v in slot, making a RELRO page writable for the store.  0, or -1. */
static int store_slot(const struct object *o, void **slot, void *v)
{
	uintptr_t at = (uintptr_t)slot;
	if (at >= o->relro_lo && at < o->relro_hi) {
		long pg = sysconf(_SC_PAGESIZE);
		void *page = (void *)(at & ~(uintptr_t)(pg - 1));
		if (mprotect(page, pg, PROT_READ | PROT_WRITE) != 0)
			return -1;
		__atomic_store_n(slot, v, __ATOMIC_SEQ_CST);
		mprotect(page, pg, PROT_READ);
	} else {
		__atomic_store_n(slot, v, __ATOMIC_SEQ_CST);
	}
	return 0;
}

/* Point h's slot in o at h->repl, saving what it held.  0, or why not. */
static int patch_one(const struct object *o, struct w2v_got_hook *h)
{
	/* For the tests only: act as if this symbol could not be hooked (see docs/hooks.md). */
	const char *forced = getenv("W2V_TEST_HOOK_FAIL");
	if (forced && strcmp(forced, h->sym) == 0)
		return W2V_HOOK_FORCED;
	int why;
	void **slot = find_slot(o, h->sym, &why);
	if (!slot)
		return why;
	uintptr_t now = (uintptr_t)__atomic_load_n(slot, __ATOMIC_SEQ_CST);
	if (now != (uintptr_t)h->orig && !(now >= o->text_lo && now < o->text_hi))
		return W2V_HOOK_FOREIGN;
	h->saved = (void *)now;
	if (store_slot(o, slot, h->repl) != 0)
		return W2V_HOOK_PROTECT;
	h->slot = slot;
	return 0;
}

static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;

static int hooks_off(void)
{
	const char *v = getenv("W2V_NO_HOOKS");
	return v && *v && strcmp(v, "0") != 0;
}

/* Patch every hook of g in o, or none: W2V_HOOK_INSTALLED, or why not (g->failed says where). */
static int patch_group(const struct object *o, struct w2v_got_group *g)
{
	for (int i = 0; i < g->n; i++) {
		int r = patch_one(o, &g->hooks[i]);
		if (r == 0)
			continue;
		g->failed = g->hooks[i].sym;
		/* Put back the slots patched before this one, last first.  (Their pages were writable a
		 * moment ago.  Should one not be now, it keeps leading to our function, which passes
		 * every call on: w2v_hook_info counts it as patched.) */
		while (i-- > 0) {
			struct w2v_got_hook *h = &g->hooks[i];
			if (store_slot(o, h->slot, h->saved) == 0)
				h->slot = NULL;
		}
		return r;
	}
	return W2V_HOOK_INSTALLED;
}

int w2v_got_install(struct w2v_got_group *g)
{
	/* Outside the lock: it takes it itself. */
	int needed = g->needs ? w2v_got_install(g->needs) : W2V_HOOK_INSTALLED;
	pthread_mutex_lock(&got_lock);
	if (!g->state) {
		struct object o;
		int state;
		if (hooks_off())
			state = W2V_HOOK_OFF;
		else if (needed != W2V_HOOK_INSTALLED)
			state = W2V_HOOK_NEEDS;
		else if (load_object(&o, g->soname) != 0)
			state = W2V_HOOK_NO_LIBRARY;
		else
			state = patch_group(&o, g);
		__atomic_store_n(&g->state, state, __ATOMIC_RELEASE);
	}
	int r = g->state;
	pthread_mutex_unlock(&got_lock);
	return r;
}

int w2v_got_state(const struct w2v_got_group *g)
{
	return __atomic_load_n(&g->state, __ATOMIC_ACQUIRE);
}

/* ---- what Python asks (w2v_hooks.h) ------------------------------------------- */

static struct w2v_got_group *const groups[W2V_HOOK_COUNT] = {
	[W2V_HOOK_READAHEAD] = &w2v_hooks_readahead,
	[W2V_HOOK_READ_WINDOW] = &w2v_hooks_read_window,
	[W2V_HOOK_COMPACT] = &w2v_hooks_compact,
	[W2V_HOOK_CLOCK] = &w2v_hooks_clock,
	[W2V_HOOK_VFILE] = &w2v_hooks_vfile,
};

int w2v_hook_install(int i)
{
	if (i < 0 || i >= W2V_HOOK_COUNT)
		return -EINVAL;
	/* libwim's pread64 slot is shared: the file views' hook (w2v_vfile.c) must go in before the
	 * read window, which chains to it (w2v_readahead.c installs them in that order). */
	if (i == W2V_HOOK_READAHEAD || i == W2V_HOOK_READ_WINDOW)
		w2v_readahead_install();
	return w2v_got_install(groups[i]);
}

const char *w2v_hook_symbol(int i, int k)
{
	if (i < 0 || i >= W2V_HOOK_COUNT || k < 0 || k >= groups[i]->n)
		return NULL;
	return groups[i]->hooks[k].sym;
}

int w2v_hook_info(int i, struct w2v_hook_info *out)
{
	if (i < 0 || i >= W2V_HOOK_COUNT)
		return -EINVAL;
	struct w2v_got_group *g = groups[i];
	pthread_mutex_lock(&got_lock);
	*out = (struct w2v_hook_info){ g->name, g->soname, g->failed, g->needs ? g->needs->name : NULL,
				       g->state, g->n, 0 };
	/* Read the slots back, whatever the state says. */
	struct object o;
	if (load_object(&o, g->soname) == 0) {
		for (int k = 0; k < g->n; k++) {
			int why;
			void **slot = find_slot(&o, g->hooks[k].sym, &why);
			if (slot && __atomic_load_n(slot, __ATOMIC_SEQ_CST) == g->hooks[k].repl)
				out->patched++;
		}
	}
	pthread_mutex_unlock(&got_lock);
	return 0;
}

static const struct { const char *name, *soname, *built; } libs[W2V_LIB_COUNT] = {
	{ "wimlib", W2V_SONAME_WIM, W2V_VERSION_WIM },
	{ "libntfs-3g", W2V_SONAME_NTFS3G, W2V_VERSION_NTFS3G },
	{ "hivex", W2V_SONAME_HIVEX, W2V_VERSION_HIVEX },
};

int w2v_lib_info(int i, struct w2v_lib_info *out)
{
	if (i < 0 || i >= W2V_LIB_COUNT)
		return -EINVAL;
	struct object o;
	*out = (struct w2v_lib_info){ libs[i].name, libs[i].soname, libs[i].built, NULL };
	if (load_object(&o, libs[i].soname) == 0)
		out->path = o.path;
	return 0;
}
