/*
 * batch: decodes one Kafka message value into a batch of items and validates every item
 * (SPEC §2, §3). Pure: no I/O, no globals; the same input always gives the same output,
 * generated eventIds included.
 *
 * Ownership: a decoded mw_batch owns its json-c tree, its items and their error strings;
 * every mw_str in it points into that tree. batch_free releases all of it.
 */
#ifndef MW_BATCH_H
#define MW_BATCH_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MW_MAX_BATCH_ITEMS_DEFAULT 10000
#define MW_UUID_STR_LEN 36

/* The item fields of SPEC §3 in the table's order (the order errors are reported in). */
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

typedef struct mw_item {
    int index;
    char *error;           /* NULL when the item is valid, else "FAIL_BAD_PARAMS: ERROR: …" */
    mw_str f[F_COUNT];     /* f[F_EVENT] is always set: given or generated */
    json_object *attrs;    /* valid items: name → string|null patch, or NULL when absent/null */
    char gen_event_id[MW_UUID_STR_LEN + 1];
} mw_item;

typedef struct mw_batch {
    mw_source src;
    json_object *root;
    char *bad_request;     /* NULL, or "FAIL_BAD_REQUEST: ERROR: <reason>" for the message */
    char bad_event_id[MW_UUID_STR_LEN + 1]; /* eventId of a bad request's one result */
    int n_items;
    mw_item *items;
    int invalid_count;     /* items that failed validation */
} mw_batch;

/* Decodes and validates buf[0..len). tok is a reusable json-c tokener (reset here).
 * Always fills *b (a bad message sets b->bad_request); returns 0, or -1 when memory ran
 * out (b is then freed and empty). src->topic must outlive b. */
int batch_decode(mw_batch *b, json_tokener *tok, const void *buf, size_t len,
                 const mw_source *src, int max_items) __attribute__((warn_unused_result));

void batch_free(mw_batch *b);

/* The deterministic eventId of item `index` of the message at src: a name-based (SHA-1,
 * version 5) UUID of "topic/partition/offset/index" in the project's namespace. */
void batch_event_id(char out[MW_UUID_STR_LEN + 1], const mw_source *src, int index);

/* A new json-c tokener with the nesting limit the worker uses. */
json_tokener *batch_tokener_new(void);

#endif
