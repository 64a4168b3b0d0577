/*
 * Redirecting a shared library's calls to one imported function, in this
 * process only, by rewriting the library's GOT slot for it.
 *
 * A call from libfoo.so to an exported function goes through libfoo's PLT,
 * which jumps to the address in libfoo's GOT slot for that symbol.  Rewriting
 * that one slot changes what libfoo calls and nothing else: other libraries,
 * and our own calls to the function, still reach the original.  This is how
 * native/ wraps libntfs-3g's cluster allocator and clock (w2v_ntfsdev.c) and
 * wimlib's chunk decompression (w2v_readahead.c) and file reads (w2v_vfile.c).
 *
 * A library linked with RELRO and BIND_NOW (Debian's libntfs-3g) has its GOT
 * read-only after relocation: the page is made writable for the store only.
 * A lazily bound library (Debian's libwim) keeps .got.plt writable, and an
 * unresolved slot points back into the library's own PLT.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "w2v_got.h"

struct slot_search {
	const char *lib, *sym;
	void **slot;
	uintptr_t relro_lo, relro_hi;  /* the library's RELRO range, if any */
	uintptr_t text_lo, text_hi;    /* its executable segment (where lazy PLT stubs are) */
};

static int find_slot(struct dl_phdr_info *info, size_t size, void *data)
{
	struct slot_search *ss = data;
	(void)size;
	if (!info->dlpi_name || !strstr(info->dlpi_name, ss->lib))
		return 0;
	ElfW(Addr) base = info->dlpi_addr;
	const ElfW(Dyn) *dyn = NULL;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_DYNAMIC)
			dyn = (const ElfW(Dyn) *)(base + ph->p_vaddr);
		else if (ph->p_type == PT_GNU_RELRO) {
			ss->relro_lo = base + ph->p_vaddr;
			ss->relro_hi = base + ph->p_vaddr + ph->p_memsz;
		} else if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
			ss->text_lo = base + ph->p_vaddr;
			ss->text_hi = base + ph->p_vaddr + ph->p_memsz;
		}
	}
	if (!dyn)
		return 0;
	ElfW(Addr) jmprel = 0, symtab = 0, strtab = 0;
	size_t relsz = 0;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		switch (dyn->d_tag) {
		case DT_JMPREL: jmprel = dyn->d_un.d_ptr; break;
		case DT_PLTRELSZ: relsz = dyn->d_un.d_val; break;
		case DT_SYMTAB: symtab = dyn->d_un.d_ptr; break;
		case DT_STRTAB: strtab = dyn->d_un.d_ptr; break;
		}
	}
	if (!jmprel || !symtab || !strtab)
		return 1;
	/* The loader may or may not have relocated these pointers in place. */
	if (jmprel < base) jmprel += base;
	if (symtab < base) symtab += base;
	if (strtab < base) strtab += base;
	const ElfW(Rela) *rel = (const ElfW(Rela) *)jmprel;
	const ElfW(Sym) *syms = (const ElfW(Sym) *)symtab;
	const char *strs = (const char *)strtab;
	for (size_t i = 0; i < relsz / sizeof(*rel); i++) {
		if (strcmp(strs + syms[ELF64_R_SYM(rel[i].r_info)].st_name, ss->sym) == 0) {
			ss->slot = (void **)(base + rel[i].r_offset);
			break;
		}
	}
	return 1;
}

/* The slot and its state: 1 it leads to orig (or the lazy stub), 0 lib does not import sym, -1 it
 * leads elsewhere or there is no such library. */
static int locate(const char *lib, const char *sym, void *orig, struct slot_search *ss)
{
	*ss = (struct slot_search){ lib, sym, NULL, 0, 0, 0, 0 };
	int found_lib = dl_iterate_phdr(find_slot, ss);
	if (!ss->slot)
		return found_lib ? 0 : -1;
	uintptr_t now = (uintptr_t)*ss->slot;
	if (now != (uintptr_t)orig && !(now >= ss->text_lo && now < ss->text_hi))
		return -1;
	return 1;
}

int w2v_got_probe(const char *lib, const char *sym, void *orig)
{
	struct slot_search ss;
	return locate(lib, sym, orig, &ss);
}

int w2v_got_patch(const char *lib, const char *sym, void *orig, void *repl)
{
	struct slot_search ss;
	if (locate(lib, sym, orig, &ss) != 1)
		return -1;
	uintptr_t at = (uintptr_t)ss.slot;
	if (at >= ss.relro_lo && at < ss.relro_hi) {
		long pg = sysconf(_SC_PAGESIZE);
		void *page = (void *)(at & ~(uintptr_t)(pg - 1));
		if (mprotect(page, pg, PROT_READ | PROT_WRITE) != 0)
			return -1;
		__atomic_store_n(ss.slot, repl, __ATOMIC_SEQ_CST);
		mprotect(page, pg, PROT_READ);
	} else {
		__atomic_store_n(ss.slot, repl, __ATOMIC_SEQ_CST);
	}
	return 0;
}
