/* Internal to native/: redirecting one library's calls to an imported function (w2v_got.c). */
#ifndef W2V_GOT_H
#define W2V_GOT_H
/*
 * Point the GOT slot through which the loaded library whose file name contains
 * `lib` calls `sym` at `repl`.  `orig` is the function the slot must lead to
 * now (its address as this library sees it); the slot may also still hold the
 * library's own lazy-binding stub.  Returns 0, or -1 when there is no such
 * library or slot, or the slot leads elsewhere (someone else patched it).
 */
int w2v_got_patch(const char *lib, const char *sym, void *orig, void *repl);
/* Whether w2v_got_patch(lib, sym, orig, ...) would succeed, without patching: 1 it would, 0 the
 * library does not import sym (so never calls it), -1 it would fail. */
int w2v_got_probe(const char *lib, const char *sym, void *orig);
#endif
