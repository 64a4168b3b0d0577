/*
 * A small file API over libntfs-3g: read and write files inside an NTFS
 * volume without mounting it.  See w2v_ntfs_files.c.
 *
 * Paths are UTF-8, relative to the volume root, with '\' or '/' separators
 * ("" or "\" is the root).  Names are looked up case-insensitively, as
 * Windows does.  Functions return 0 (or a size) on success and -errno on
 * failure; w2v_ntfsvol_last_error() then has libntfs-3g's own words.
 * Times are NT FILETIMEs: 100 ns units since 1601-01-01 UTC.
 */
#ifndef W2V_NTFS_FILES_H
#define W2V_NTFS_FILES_H
#include <stddef.h>
#include <stdint.h>

typedef struct w2v_ntfsvol w2v_ntfsvol;

struct w2v_ntfs_info {
	uint64_t mft_no;        /* MFT record number */
	uint64_t size;          /* unnamed data stream, bytes (0 for directories) */
	uint64_t alloc_size;    /* clusters allocated to it, bytes */
	uint32_t attributes;    /* FILE_ATTRIBUTE_* as Windows reports them */
	uint32_t nlink;         /* hard links (a long name and its DOS name count once) */
	uint32_t reparse_tag;   /* 0 unless a reparse point */
	uint32_t security_id;   /* index into $Secure, 0 if none */
	uint32_t n_streams;     /* named data streams */
	int is_dir;
	int64_t creation_time, write_time, access_time, change_time;
};

/* Mount flags */
#define W2V_NTFSVOL_READONLY 1

/* Flags of w2v_ntfsvol_write */
#define W2V_NTFSVOL_TRUNCATE 1  /* cut the stream at offset+len */
#define W2V_NTFSVOL_NOCREATE 2  /* the file must exist */

/* Flags of w2v_ntfsvol_list */
#define W2V_NTFSVOL_LIST_SYSTEM 1  /* include NTFS metafiles ($MFT, ...) */

/* Times left alone by w2v_ntfsvol_set_times */
#define W2V_NTFSVOL_KEEP_TIME (-1)

/* Mount a device: an image file path, or "w2v:N" from w2v_ntfsdev_register().
 * Returns NULL with errno set on failure. */
w2v_ntfsvol *w2v_ntfsvol_mount(const char *device, int flags);
/* Unmount, writing everything back; frees v even on failure. */
int w2v_ntfsvol_umount(w2v_ntfsvol *v);
/* The libntfs-3g messages logged during this thread's last call ("" if none). */
const char *w2v_ntfsvol_last_error(void);
void w2v_ntfsvol_free(void *p);

int w2v_ntfsvol_stat(w2v_ntfsvol *v, const char *path, struct w2v_ntfs_info *out);
/* Create a directory; with parents, also its missing parents and no error if it exists. */
int w2v_ntfsvol_mkdir(w2v_ntfsvol *v, const char *path, int parents);
/* Write len bytes at offset to a data stream (NULL or "" is the unnamed one),
 * creating the file and the stream when missing. */
int w2v_ntfsvol_write(w2v_ntfsvol *v, const char *path, const char *stream,
		      const void *buf, uint64_t len, uint64_t offset, int flags);
/* Read up to len bytes at offset; returns the count read (0 at the end). */
int64_t w2v_ntfsvol_read(w2v_ntfsvol *v, const char *path, const char *stream,
			 void *buf, uint64_t len, uint64_t offset);
int64_t w2v_ntfsvol_stream_size(w2v_ntfsvol *v, const char *path, const char *stream);
int w2v_ntfsvol_remove_stream(w2v_ntfsvol *v, const char *path, const char *stream);
/* A directory's entries, or a file's named streams, as one malloc'ed block
 * of records "<type><name>\0" (type 'd' directory, 'f' file, 'l' reparse
 * point, 's' stream); free it with w2v_ntfsvol_free. */
int w2v_ntfsvol_list(w2v_ntfsvol *v, const char *path, int flags, char **out, size_t *out_len);
int w2v_ntfsvol_list_streams(w2v_ntfsvol *v, const char *path, char **out, size_t *out_len);

int w2v_ntfsvol_get_attributes(w2v_ntfsvol *v, const char *path, uint32_t *out);
int w2v_ntfsvol_set_attributes(w2v_ntfsvol *v, const char *path, uint32_t attributes);
/* Self-relative security descriptor; get returns its size (copied only if it fits). */
int w2v_ntfsvol_get_security(w2v_ntfsvol *v, const char *path, void *buf, size_t size);
int w2v_ntfsvol_set_security(w2v_ntfsvol *v, const char *path, const void *sd, size_t size);
/* A whole REPARSE_DATA_BUFFER (tag, length, reserved, data); get returns its size. */
int w2v_ntfsvol_get_reparse(w2v_ntfsvol *v, const char *path, void *buf, size_t size);
int w2v_ntfsvol_set_reparse(w2v_ntfsvol *v, const char *path, const void *data, size_t size);
int w2v_ntfsvol_remove_reparse(w2v_ntfsvol *v, const char *path);
/* DOS 8.3 name; the parent directory's times are kept. get returns its length. */
int w2v_ntfsvol_get_short_name(w2v_ntfsvol *v, const char *path, char *buf, size_t size);
int w2v_ntfsvol_set_short_name(w2v_ntfsvol *v, const char *path, const char *short_name);
int w2v_ntfsvol_set_times(w2v_ntfsvol *v, const char *path, int64_t creation,
			  int64_t write, int64_t access, int64_t change);
/* A new name for an existing file (not a directory). */
int w2v_ntfsvol_link(w2v_ntfsvol *v, const char *existing, const char *new_path);
/* Remove a name: a file (its data goes with its last link) or an empty directory. */
int w2v_ntfsvol_unlink(w2v_ntfsvol *v, const char *path);
#endif
