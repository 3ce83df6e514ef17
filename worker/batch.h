/*
 * batch: decodes one Kafka message value into a batch of items and validates every item
 * (docs/contract.md §2, §3). Pure: no I/O, no globals; the same input always gives the same
 * output, generated eventIds included.
 *
 * Ownership: a decoded mw_batch owns one block of decoded strings (every mw_str in it points
 * there), its items, their attributes and their error strings; batch_free releases all of it.
 * It keeps no pointer into the input buffer.
 */
#ifndef MW_BATCH_H
#define MW_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MW_MAX_BATCH_ITEMS_DEFAULT 10000
#define MW_UUID_STR_LEN 36

/* The item fields of contract §3 in the table's order (the order errors are reported in). */
enum mw_field {
    F_CONVERSATION, F_CUSTOMER, F_EVENT, F_STATUS, F_PHONE, F_EMAIL,
    F_USER, F_COUNTRY, F_STATE, F_ZIP, F_COUNT
};

typedef struct mw_field_def {
    const char *name;   /* JSON name, e.g. "externalCustomerId" */
    const char *column; /* column name, e.g. "external_customer_id" */
    size_t max_len;     /* in Unicode code points */
    bool required;
} mw_field_def;

extern const mw_field_def batch_fields[F_COUNT];

/* A string in the decoded tree; p == NULL means absent or null. May not be NUL-terminated
 * at n in the sense of holding no NUL: validated strings never contain U+0000. */
typedef struct mw_str {
    const char *p;
    size_t n;
} mw_str;

typedef struct mw_source {
    const char *topic;
    int32_t partition;
    int64_t offset;
} mw_source;

/* One entry of an attributes patch: value.p == NULL means null (removes the name). */
typedef struct mw_attr {
    mw_str name;
    mw_str value;
} mw_attr;

typedef struct mw_item {
    int index;
    char *error;           /* NULL when the item is valid, else "FAIL_BAD_PARAMS: ERROR: …" */
    mw_str f[F_COUNT];     /* f[F_EVENT] is always set: given or generated */
    /* Valid items: the attributes patch as given, in order (a later duplicate name wins);
     * has_attrs false when attributes is absent or null (the stored map is kept). */
    bool has_attrs;
    int n_attrs;
    const mw_attr *attrs;
    int attr_start;        /* (decoding) index of attrs[0] in the batch's pool */
    char gen_event_id[MW_UUID_STR_LEN + 1];
} mw_item;

typedef struct mw_batch {
    mw_source src;
    char *strings;         /* the decoded strings (owned) */
    size_t strings_used;
    mw_attr *attr_pool;    /* every item's attributes (owned) */
    int n_attr_pool, cap_attr_pool;
    char *bad_request;     /* NULL, or "FAIL_BAD_REQUEST: ERROR: <reason>" for the message */
    char bad_event_id[MW_UUID_STR_LEN + 1]; /* eventId of a bad request's one result */
    int n_items;
    mw_item *items;
    int invalid_count;     /* items that failed validation */
} mw_batch;

/* Decodes and validates buf[0..len) (buf may be freed afterwards). Always fills *b (a bad
 * message sets b->bad_request); returns 0, or -1 when memory ran out (b is then freed and
 * empty). src->topic must outlive b. */
int batch_decode(mw_batch *b, const void *buf, size_t len, const mw_source *src,
                 int max_items) __attribute__((warn_unused_result));

void batch_free(mw_batch *b);

/* Moves a decoded batch to src: the same outcome as decoding its message at src (only the
 * generated eventIds depend on the source). For the API, which decodes a body before Kafka
 * gives it a partition and an offset. */
void batch_set_source(mw_batch *b, const mw_source *src);

/* The deterministic eventId of item `index` of the message at src: a name-based (SHA-1,
 * version 5) UUID of "topic/partition/offset/index" in the project's namespace. */
void batch_event_id(char out[MW_UUID_STR_LEN + 1], const mw_source *src, int index);

/* The deepest nesting of arrays and objects a message may have. */
#define MW_JSON_MAX_DEPTH 64

#endif
