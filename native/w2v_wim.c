/*
 * wimlib progress, flattened.  wimlib calls this for each progress message
 * (a few hundred over an apply, not per I/O).  It hands a flat struct to the
 * Python callback, which returns non-zero to abort: wimlib then stops with
 * WIMLIB_ERR_ABORTED_BY_PROGRESS and Python raises the saved exception.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <wimlib.h>
#include "w2v_wim.h"

int w2v_py_progress(struct w2v_progress *p, void *ctx); /* extern "Python+C" */

static enum wimlib_progress_status on_progress(enum wimlib_progress_msg msg,
					       union wimlib_progress_info *info, void *ctx)
{
	struct w2v_progress p;
	memset(&p, 0, sizeof(p));
	p.msg = msg;
	switch (msg) {
	case WIMLIB_PROGRESS_MSG_EXTRACT_STREAMS:
	case WIMLIB_PROGRESS_MSG_EXTRACT_FILE_STRUCTURE:
	case WIMLIB_PROGRESS_MSG_EXTRACT_METADATA:
	case WIMLIB_PROGRESS_MSG_EXTRACT_IMAGE_BEGIN:
	case WIMLIB_PROGRESS_MSG_EXTRACT_IMAGE_END:
		p.done = info->extract.completed_bytes;
		p.total = info->extract.total_bytes;
		p.done2 = info->extract.current_file_count;
		p.total2 = info->extract.end_file_count;
		break;
	case WIMLIB_PROGRESS_MSG_WRITE_STREAMS:
		p.done = info->write_streams.completed_bytes;
		p.total = info->write_streams.total_bytes;
		p.done2 = info->write_streams.completed_streams;
		p.total2 = info->write_streams.total_streams;
		break;
	case WIMLIB_PROGRESS_MSG_SCAN_BEGIN:
	case WIMLIB_PROGRESS_MSG_SCAN_DENTRY:
	case WIMLIB_PROGRESS_MSG_SCAN_END:
		p.done = info->scan.num_bytes_scanned;
		p.done2 = info->scan.num_nondirs_scanned;
		p.total2 = info->scan.num_dirs_scanned;
		p.path = info->scan.cur_path;
		break;
	case WIMLIB_PROGRESS_MSG_VERIFY_STREAMS:
		p.done = info->verify_streams.completed_bytes;
		p.total = info->verify_streams.total_bytes;
		break;
	default:
		break;
	}
	return w2v_py_progress(&p, ctx) ? WIMLIB_PROGRESS_STATUS_ABORT : WIMLIB_PROGRESS_STATUS_CONTINUE;
}

void w2v_wim_set_progress(WIMStruct *wim, void *ctx)
{
	wimlib_register_progress_function(wim, ctx ? on_progress : NULL, ctx);
}

/*
 * libxml2, which wimlib 1.13 parses a WIM's XML data with, prints its parser's
 * complaints on stderr ("Entity: line 1: parser error : ...", three lines per
 * error) before wimlib returns WIMLIB_ERR_XML.  We report that error in one line
 * ourselves, so its handlers are set to drop them: for the calling thread (libxml2
 * keeps them per thread) and as the default of threads started later.  The symbols
 * are looked up at run time: a wimlib without libxml2 (1.14 has its own parser)
 * leaves nothing to do.
 */
typedef void (*xml_generic_fn)(void *ctx, const char *msg, ...);
typedef void (*xml_structured_fn)(void *ctx, void *error);

static void drop_generic(void *ctx, const char *msg, ...)
{
	(void)ctx;
	(void)msg;
}

static void drop_structured(void *ctx, void *error)
{
	(void)ctx;
	(void)error;
}

int w2v_quiet_xml(void)
{
	static const char *const generic[] = { "xmlSetGenericErrorFunc", "xmlThrDefSetGenericErrorFunc" };
	static const char *const structured[] = { "xmlSetStructuredErrorFunc", "xmlThrDefSetStructuredErrorFunc" };
	int done = 0;
	for (int i = 0; i < 2; i++) {
		void (*g)(void *, xml_generic_fn) = (void (*)(void *, xml_generic_fn))dlsym(RTLD_DEFAULT, generic[i]);
		void (*s)(void *, xml_structured_fn) =
			(void (*)(void *, xml_structured_fn))dlsym(RTLD_DEFAULT, structured[i]);
		if (g) {
			g(NULL, drop_generic);
			done++;
		}
		if (s) {
			s(NULL, drop_structured);
			done++;
		}
	}
	return done;
}

/*
 * A file by name in a folder of an image, from the image's metadata (nothing is extracted), so
 * that apply can check what it will need (Winre.wim's size, boot.sdi) before it writes anything.
 */
struct find_ctx {
	const char *name;
	char *path;
	size_t path_len;
	uint64_t size;
	int found;
};

static int find_one(const struct wimlib_dir_entry *d, void *arg)
{
	struct find_ctx *c = arg;
	if (d->attributes & (WIMLIB_FILE_ATTRIBUTE_DIRECTORY | WIMLIB_FILE_ATTRIBUTE_REPARSE_POINT))
		return 0;
	if (!d->filename || strcasecmp(d->filename, c->name) != 0)
		return 0;
	if (c->found && strcasecmp(d->full_path, c->path) >= 0)
		return 0;
	if (strlen(d->full_path) >= c->path_len)
		return 0;  /* longer than any path asked for here */
	snprintf(c->path, c->path_len, "%s", d->full_path);
	c->size = d->streams[0].resource.uncompressed_size;
	c->found = 1;
	return 0;
}

int w2v_wim_find_file(WIMStruct *wim, int image, const char *dir, const char *name, int recursive,
		      char *path, size_t path_len, uint64_t *size)
{
	struct find_ctx c = { name, path, path_len, 0, 0 };
	int flags = WIMLIB_ITERATE_DIR_TREE_FLAG_CHILDREN | (recursive ? WIMLIB_ITERATE_DIR_TREE_FLAG_RECURSIVE : 0);
	int ret;
	if (path_len)
		path[0] = 0;
	ret = wimlib_iterate_dir_tree(wim, image, dir, flags, find_one, &c);
	if (ret == WIMLIB_ERR_PATH_DOES_NOT_EXIST)
		return -1;
	if (ret)
		return ret;
	if (!c.found)
		return -1;
	*size = c.size;
	return 0;
}
