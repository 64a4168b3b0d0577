/* cffi declarations: native/w2v_ntfsvol.h (files inside an NTFS volume through libntfs-3g) */
typedef struct w2v_ntfsvol w2v_ntfsvol;
struct w2v_ntfs_info {
	uint64_t mft_no;
	uint64_t size;
	uint64_t alloc_size;
	uint32_t attributes;
	uint32_t nlink;
	uint32_t reparse_tag;
	uint32_t security_id;
	uint32_t n_streams;
	int is_dir;
	int64_t creation_time, write_time, access_time, change_time;
};
#define W2V_NTFSVOL_READONLY ...
#define W2V_NTFSVOL_TRUNCATE ...
#define W2V_NTFSVOL_NOCREATE ...
#define W2V_NTFSVOL_LIST_SYSTEM ...
#define W2V_NTFSVOL_KEEP_TIME ...
w2v_ntfsvol *w2v_ntfsvol_mount(const char *device, int flags);
int w2v_ntfsvol_umount(w2v_ntfsvol *v);
const char *w2v_ntfsvol_last_error(void);
void w2v_ntfsvol_free(void *p);
int w2v_ntfsvol_stat(w2v_ntfsvol *v, const char *path, struct w2v_ntfs_info *out);
int w2v_ntfsvol_mkdir(w2v_ntfsvol *v, const char *path, int parents);
int w2v_ntfsvol_write(w2v_ntfsvol *v, const char *path, const char *stream,
		      const void *buf, uint64_t len, uint64_t offset, int flags);
int64_t w2v_ntfsvol_read(w2v_ntfsvol *v, const char *path, const char *stream,
			 void *buf, uint64_t len, uint64_t offset);
int64_t w2v_ntfsvol_stream_size(w2v_ntfsvol *v, const char *path, const char *stream);
int w2v_ntfsvol_remove_stream(w2v_ntfsvol *v, const char *path, const char *stream);
int w2v_ntfsvol_list(w2v_ntfsvol *v, const char *path, int flags, char **out, size_t *out_len);
int w2v_ntfsvol_list_streams(w2v_ntfsvol *v, const char *path, char **out, size_t *out_len);
int w2v_ntfsvol_get_attributes(w2v_ntfsvol *v, const char *path, uint32_t *out);
int w2v_ntfsvol_set_attributes(w2v_ntfsvol *v, const char *path, uint32_t attributes);
int w2v_ntfsvol_get_security(w2v_ntfsvol *v, const char *path, void *buf, size_t size);
int w2v_ntfsvol_set_security(w2v_ntfsvol *v, const char *path, const void *sd, size_t size);
int w2v_ntfsvol_get_reparse(w2v_ntfsvol *v, const char *path, void *buf, size_t size);
int w2v_ntfsvol_set_reparse(w2v_ntfsvol *v, const char *path, const void *data, size_t size);
int w2v_ntfsvol_remove_reparse(w2v_ntfsvol *v, const char *path);
int w2v_ntfsvol_get_short_name(w2v_ntfsvol *v, const char *path, char *buf, size_t size);
int w2v_ntfsvol_set_short_name(w2v_ntfsvol *v, const char *path, const char *short_name);
int w2v_ntfsvol_set_times(w2v_ntfsvol *v, const char *path, int64_t creation,
			  int64_t write, int64_t access, int64_t change);
int w2v_ntfsvol_link(w2v_ntfsvol *v, const char *existing, const char *new_path);
int w2v_ntfsvol_unlink(w2v_ntfsvol *v, const char *path);
