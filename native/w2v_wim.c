/*
 * wimlib progress, flattened.  wimlib calls this for each progress message
 * (a few hundred over an apply, not per I/O).  It hands a flat struct to the
 * Python callback, which returns non-zero to abort: wimlib then stops with
 * WIMLIB_ERR_ABORTED_BY_PROGRESS and Python raises the saved exception.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
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
