/* cffi declarations: native/w2v_block.h and w2v_ntfsdev.h */
enum { W2V_ST_ABSENT = 0, W2V_ST_ZERO = 1, W2V_ST_PRESENT = 2, W2V_ST_PARTIAL = 3 };
enum { W2V_BM_NONE = 0, W2V_BM_INLINE_MSB = 1, W2V_BM_GROUPED_LSB = 2 };
struct w2v_params {
	int fd;
	int writable;
	uint64_t virtual_size;
	uint32_t sector_size;
	uint32_t block_size;
	uint64_t flat_offset;
	int bitmap_mode;
	uint32_t bitmap_bytes;
	uint32_t chunk_ratio;
	uint32_t group_bytes;
	uint32_t alloc_align;
	uint64_t file_end;
	int trailer_at_end;
	int fill_bitmap_on_alloc;
};
typedef struct w2v_disk w2v_disk;
w2v_disk *w2v_disk_new(const struct w2v_params *p);
void w2v_disk_free(w2v_disk *d);
uint64_t *w2v_data_off(w2v_disk *d);
uint8_t *w2v_state(w2v_disk *d);
uint64_t *w2v_group_off(w2v_disk *d);
uint64_t w2v_n_blocks(w2v_disk *d);
uint64_t w2v_n_groups(w2v_disk *d);
uint64_t w2v_file_end(w2v_disk *d);
void w2v_set_trailer(w2v_disk *d, int present);
void w2v_set_parent(w2v_disk *d, w2v_disk *parent);
int64_t w2v_pread(w2v_disk *d, void *buf, uint64_t count, uint64_t offset);
int64_t w2v_pwrite(w2v_disk *d, const void *buf, uint64_t count, uint64_t offset);
int w2v_flush(w2v_disk *d);
size_t w2v_take_dirty_blocks(w2v_disk *d, uint64_t *out, size_t max);
size_t w2v_take_dirty_groups(w2v_disk *d, uint64_t *out, size_t max);
uint64_t w2v_next_data(w2v_disk *d, uint64_t offset, uint64_t *len);
uint64_t w2v_allocated_bytes(w2v_disk *d);
int64_t w2v_copy(w2v_disk *src, uint64_t src_off, w2v_disk *dst, uint64_t dst_off, uint64_t len);
int w2v_cache_configure(w2v_disk *d, uint64_t bytes);
struct w2v_stats {
	uint64_t reads, writes, read_bytes, write_bytes;
	uint64_t cache_hits, cache_misses, cache_writebacks;
	uint64_t file_reads, file_writes, allocations;
};
void w2v_get_stats(w2v_disk *d, struct w2v_stats *out);

int w2v_ntfsdev_install(void);
int w2v_ntfsdev_register(w2v_disk *disk, uint64_t offset, uint64_t length, uint32_t sector_size, int writable);
void w2v_ntfsdev_unregister(int id);
