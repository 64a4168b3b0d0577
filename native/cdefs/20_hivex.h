/* cffi declarations: hivex.h */
typedef struct hive_h hive_h;
typedef size_t hive_node_h;
typedef size_t hive_value_h;
enum hive_type {
	hive_t_REG_NONE, hive_t_REG_SZ, hive_t_REG_EXPAND_SZ, hive_t_REG_BINARY, hive_t_REG_DWORD,
	hive_t_REG_DWORD_BIG_ENDIAN, hive_t_REG_LINK, hive_t_REG_MULTI_SZ, hive_t_REG_RESOURCE_LIST,
	hive_t_REG_FULL_RESOURCE_DESCRIPTOR, hive_t_REG_RESOURCE_REQUIREMENTS_LIST, hive_t_REG_QWORD,
	...
};
typedef enum hive_type hive_type;
struct hive_set_value { char *key; hive_type t; size_t len; char *value; };
typedef struct hive_set_value hive_set_value;
#define HIVEX_OPEN_VERBOSE ...
#define HIVEX_OPEN_DEBUG ...
#define HIVEX_OPEN_WRITE ...
#define HIVEX_OPEN_UNSAFE ...
hive_h *hivex_open(const char *filename, int flags);
int hivex_close(hive_h *h);
hive_node_h hivex_root(hive_h *h);
int64_t hivex_last_modified(hive_h *h);
char *hivex_node_name(hive_h *h, hive_node_h node);
size_t hivex_node_name_len(hive_h *h, hive_node_h node);
int64_t hivex_node_timestamp(hive_h *h, hive_node_h node);
hive_node_h *hivex_node_children(hive_h *h, hive_node_h node);
hive_node_h hivex_node_get_child(hive_h *h, hive_node_h node, const char *name);
size_t hivex_node_nr_children(hive_h *h, hive_node_h node);
hive_node_h hivex_node_parent(hive_h *h, hive_node_h node);
hive_value_h *hivex_node_values(hive_h *h, hive_node_h node);
hive_value_h hivex_node_get_value(hive_h *h, hive_node_h node, const char *key);
size_t hivex_node_nr_values(hive_h *h, hive_node_h node);
size_t hivex_value_key_len(hive_h *h, hive_value_h val);
char *hivex_value_key(hive_h *h, hive_value_h val);
int hivex_value_type(hive_h *h, hive_value_h val, hive_type *t, size_t *len);
char *hivex_value_value(hive_h *h, hive_value_h val, hive_type *t, size_t *len);
int hivex_commit(hive_h *h, const char *filename, int flags);
hive_node_h hivex_node_add_child(hive_h *h, hive_node_h parent, const char *name);
int hivex_node_delete_child(hive_h *h, hive_node_h node);
int hivex_node_set_values(hive_h *h, hive_node_h node, size_t nr_values, const hive_set_value *values, int flags);
int hivex_node_set_value(hive_h *h, hive_node_h node, const hive_set_value *val, int flags);
void free(void *ptr);
