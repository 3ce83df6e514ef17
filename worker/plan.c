/* plan: merges a transaction's items by key and writes the upsert's documents; see plan.h. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

void plan_init(mw_plan *p) { memset(p, 0, sizeof *p); }

void plan_reset(mw_plan *p) {
    for (int i = 0; i < p->n_rows; i++) json_object_put(p->rows[i].attrs);
    p->n_items = 0;
    p->n_rows = 0;
    if (p->slots) memset(p->slots, 0, p->n_slots * sizeof *p->slots);
}

void plan_free(mw_plan *p) {
    plan_reset(p);
    free(p->items);
    free(p->rows);
    free(p->slots);
    memset(p, 0, sizeof *p);
}

int plan_add(mw_plan *p, const mw_item *item, int32_t partition, int64_t offset) {
    if (p->n_items == p->cap_items) {
        int cap = p->cap_items ? p->cap_items * 2 : 256;
        mw_plan_item *n = realloc(p->items, (size_t)cap * sizeof *n);
        if (!n) return -1;
        p->items = n;
        p->cap_items = cap;
    }
    p->items[p->n_items++] = (mw_plan_item){item, partition, offset};
    return 0;
}

static uint64_t key_hash(const mw_item *it) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    const mw_str *a = &it->f[F_CUSTOMER], *b = &it->f[F_CONVERSATION];
    for (size_t i = 0; i < a->n; i++) h = (h ^ (unsigned char)a->p[i]) * 1099511628211ULL;
    h = (h ^ 0xffu) * 1099511628211ULL; /* 0xff never occurs in UTF-8: a safe separator */
    for (size_t i = 0; i < b->n; i++) h = (h ^ (unsigned char)b->p[i]) * 1099511628211ULL;
    return h;
}

static bool str_eq(const mw_str *a, const mw_str *b) {
    return a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
}

/* Composes patch into *dst: later names replace earlier ones, null included (it removes
 * the name when applied). Values are shared with the items' trees (a reference each). */
static int compose(json_object **dst, json_object *patch) {
    if (!patch) return 0;
    if (!*dst && !(*dst = json_object_new_object())) return -1;
    json_object_object_foreach(patch, k, v) {
        if (json_object_object_add(*dst, k, json_object_get(v)) != 0) {
            json_object_put(v);
            return -1;
        }
    }
    return 0;
}

int plan_merge(mw_plan *p) {
    size_t need = 16;
    while (need < (size_t)p->n_items * 2) need *= 2;
    if (need > p->n_slots) {
        int *s = realloc(p->slots, need * sizeof *s);
        if (!s) return -1;
        p->slots = s;
        p->n_slots = need;
    }
    memset(p->slots, 0, p->n_slots * sizeof *p->slots);
    if (p->cap_rows < p->n_items) {
        mw_row *r = realloc(p->rows, (size_t)p->n_items * sizeof *r);
        if (!r) return -1;
        p->rows = r;
        p->cap_rows = p->n_items;
    }
    for (int i = 0; i < p->n_rows; i++) json_object_put(p->rows[i].attrs);
    p->n_rows = 0;

    size_t mask = p->n_slots - 1;
    for (int i = 0; i < p->n_items; i++) {
        const mw_plan_item *pi = &p->items[i];
        const mw_item *it = pi->item;
        uint64_t h = key_hash(it);
        size_t s = (size_t)h & mask;
        mw_row *row = NULL;
        while (p->slots[s]) {
            mw_row *r = &p->rows[p->slots[s] - 1];
            if (r->hash == h && str_eq(&r->f[F_CUSTOMER], &it->f[F_CUSTOMER]) &&
                str_eq(&r->f[F_CONVERSATION], &it->f[F_CONVERSATION])) {
                row = r;
                break;
            }
            s = (s + 1) & mask;
        }
        if (!row) {
            row = &p->rows[p->n_rows++];
            memset(row, 0, sizeof *row);
            row->hash = h;
            p->slots[s] = p->n_rows;
        }
        for (int f = 0; f < F_COUNT; f++)
            if (it->f[f].p) row->f[f] = it->f[f];
        if (compose(&row->attrs, it->attrs) != 0) return -1;
        row->last = pi;
    }
    return 0;
}

/* Short names keep the documents small; they match customer_metadata_merge's record. */
static const char *const doc_keys[F_COUNT] = {
    [F_CONVERSATION] = "conv", [F_CUSTOMER] = "cid", [F_EVENT] = "eid",
    [F_STATUS] = "status", [F_PHONE] = "phone", [F_EMAIL] = "email", [F_USER] = "uid",
    [F_COUNTRY] = "country", [F_STATE] = "state", [F_ZIP] = "zip",
};

/* An attributes patch goes as "aset" (the names it sets, an object) and "adel" (the names
 * it removes, an array, omitted when empty): PostgreSQL then applies it with two jsonb
 * operators, (current - adel) || aset, without a per-row sub-query. */
static void write_patch(jsonw *out, json_object *patch) {
    jsonw_key(out, "aset");
    jsonw_raw(out, "{");
    bool dels = false;
    json_object_object_foreach(patch, k, v) {
        if (!v) {
            dels = true;
            continue;
        }
        jsonw_key(out, k);
        jsonw_strn(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
    }
    jsonw_raw(out, "}");
    if (!dels) return;
    jsonw_key(out, "adel");
    jsonw_raw(out, "[");
    json_object_object_foreach(patch, k2, v2) {
        if (v2) continue;
        jsonw_elem(out);
        jsonw_str(out, k2);
    }
    jsonw_raw(out, "]");
}

static void write_record(jsonw *out, const mw_str *f, json_object *attrs, const mw_plan_item *src) {
    jsonw_elem(out);
    jsonw_raw(out, "{");
    for (int k = 0; k < F_COUNT; k++) {
        if (!f[k].p) continue;
        jsonw_key(out, doc_keys[k]);
        jsonw_strn(out, f[k].p, f[k].n);
    }
    if (attrs) write_patch(out, attrs);
    jsonw_key(out, "part"); jsonw_int(out, src->partition);
    jsonw_key(out, "off"); jsonw_int(out, src->offset);
    jsonw_key(out, "idx"); jsonw_int(out, src->item->index);
    jsonw_raw(out, "}");
}

void plan_rows_json(const mw_plan *p, jsonw *out) {
    jsonw_raw(out, "[");
    for (int i = 0; i < p->n_rows; i++)
        write_record(out, p->rows[i].f, p->rows[i].attrs, p->rows[i].last);
    jsonw_raw(out, "]");
}

void plan_items_json(const mw_plan *p, jsonw *out) {
    jsonw_raw(out, "[");
    for (int i = 0; i < p->n_items; i++)
        write_record(out, p->items[i].item->f, p->items[i].item->attrs, &p->items[i]);
    jsonw_raw(out, "]");
}
