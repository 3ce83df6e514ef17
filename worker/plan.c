/* plan: groups a transaction's items by key and writes the upsert's documents (the
 * generations, and the items one by one); see plan.h. */
#include "plan.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void plan_init(mw_plan *p) { memset(p, 0, sizeof *p); }

void plan_reset(mw_plan *p) {
    p->n_items = 0;
    p->n_rows = 0;
    p->n_gens = 0;
    if (p->slots) memset(p->slots, 0, p->n_slots * sizeof *p->slots);
}

void plan_free(mw_plan *p) {
    plan_reset(p);
    free(p->items);
    free(p->rows);
    free(p->slots);
    free(p->active);
    free(p->pairs);
    free(p->order);
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
    p->items[p->n_items++] = (mw_plan_item){item, partition, offset, -1};
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

static int str_cmp(const mw_str *a, const mw_str *b) {
    size_t n = a->n < b->n ? a->n : b->n;
    int c = n ? memcmp(a->p, b->p, n) : 0;
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

static int row_cmp(const void *x, const void *y) {
    const mw_row *a = x, *b = y;
    int c = str_cmp(&a->cid, &b->cid);
    return c ? c : str_cmp(&a->conv, &b->conv);
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
        int *a = realloc(p->active, (size_t)p->n_items * sizeof *a);
        if (!a) return -1; /* cap_rows unchanged: the next merge grows both again */
        p->active = a;
        p->cap_rows = p->n_items;
    }
    p->n_rows = 0;
    p->n_gens = 0;

    size_t mask = p->n_slots - 1;
    for (int i = 0; i < p->n_items; i++) {
        mw_plan_item *pi = &p->items[i];
        pi->next_in_row = -1;
        const mw_item *it = pi->item;
        uint64_t h = key_hash(it);
        size_t s = (size_t)h & mask;
        mw_row *row = NULL;
        while (p->slots[s]) {
            mw_row *r = &p->rows[p->slots[s] - 1];
            if (r->hash == h && str_eq(&r->cid, &it->f[F_CUSTOMER]) &&
                str_eq(&r->conv, &it->f[F_CONVERSATION])) {
                row = r;
                break;
            }
            s = (s + 1) & mask;
        }
        if (!row) {
            row = &p->rows[p->n_rows++];
            *row = (mw_row){.cid = it->f[F_CUSTOMER], .conv = it->f[F_CONVERSATION],
                            .first = i, .hash = h};
            p->slots[s] = p->n_rows;
        } else {
            p->items[row->last_i].next_in_row = i;
        }
        row->last_i = i;
        if (++row->n > p->n_gens) p->n_gens = row->n;
    }
    /* Rows in key order: PostgreSQL locks them in the order the MERGE meets them, so two
     * transactions writing common keys (two connections, or two workers) wait for each
     * other instead of deadlocking (and losing deadlock_timeout, 1 s, before a retry). Each
     * generation lists its records in this order. */
    if (p->n_rows > 1) qsort(p->rows, (size_t)p->n_rows, sizeof *p->rows, row_cmp);
    return 0;
}

/* Short names keep the documents small; they match customer_metadata_merge's record. */
static const char *const doc_keys[F_COUNT] = {
    [F_CONVERSATION] = "conv", [F_CUSTOMER] = "cid", [F_EVENT] = "eid",
    [F_STATUS] = "status", [F_PHONE] = "phone", [F_EMAIL] = "email", [F_USER] = "uid",
    [F_COUNTRY] = "country", [F_STATE] = "state", [F_ZIP] = "zip",
};

/* Gathers the attributes patch of item `first` (chain: of it and the items of its key after
 * it, composed in order) into p->pairs, and marks in p->order[i] (1/0) the entries that
 * stay: the last of each name (within one item the last duplicate name wins; across items
 * the later item's setting or removal wins). Returns the number of entries, or -1 out of
 * memory. */
static int compose(mw_plan *p, int first, bool chain) {
    int k = 0;
    for (int i = first; i >= 0; i = chain ? p->items[i].next_in_row : -1)
        k += p->items[i].item->n_attrs;
    if (k > p->cap_pairs) {
        const mw_attr **np = realloc(p->pairs, (size_t)k * sizeof *np);
        if (!np) return -1;
        p->pairs = np;
        int *no = realloc(p->order, (size_t)k * 2 * sizeof *no);
        if (!no) return -1;
        p->order = no;
        p->cap_pairs = k;
    }
    k = 0;
    for (int i = first; i >= 0; i = chain ? p->items[i].next_in_row : -1) {
        const mw_item *it = p->items[i].item;
        for (int a = 0; a < it->n_attrs; a++) p->pairs[k++] = &it->attrs[a];
    }
    int *keep = p->order;
    if (k <= 16) {
        for (int i = 0; i < k; i++) {
            keep[i] = 1;
            for (int j = i + 1; j < k && keep[i]; j++)
                if (str_eq(&p->pairs[i]->name, &p->pairs[j]->name)) keep[i] = 0;
        }
        return k;
    }
    /* Many names: sort the entries' indexes by (name, position); the last of each run stays. */
    int *idx = p->order + k;
    for (int i = 0; i < k; i++) idx[i] = i;
    const mw_attr **pairs = p->pairs;
    for (int gap = k / 2; gap > 0; gap /= 2) /* Shell sort: no qsort context pointer in C11 */
        for (int i = gap; i < k; i++)
            for (int j = i - gap; j >= 0; j -= gap) {
                const mw_str *x = &pairs[idx[j]]->name, *y = &pairs[idx[j + gap]]->name;
                size_t m = x->n < y->n ? x->n : y->n;
                int c = memcmp(x->p, y->p, m);
                if (c == 0) c = x->n < y->n ? -1 : x->n > y->n;
                if (c < 0 || (c == 0 && idx[j] < idx[j + gap])) break;
                int t = idx[j]; idx[j] = idx[j + gap]; idx[j + gap] = t;
            }
    for (int i = 0; i < k; i++)
        keep[idx[i]] = i + 1 == k || !str_eq(&pairs[idx[i]]->name, &pairs[idx[i + 1]]->name);
    return k;
}

/* An attributes patch goes as "aset" (the names it sets, an object) and "adel" (the names
 * it removes, an array, omitted when empty): PostgreSQL then applies it with two jsonb
 * operators, (current - adel) || aset, without a per-row sub-query. */
static void write_patch(mw_plan *p, jsonw *out, int first, bool chain) {
    int k = compose(p, first, chain);
    if (k < 0) {
        out->oom = true;
        return;
    }
    jsonw_key(out, "aset");
    jsonw_raw(out, "{");
    bool dels = false;
    for (int i = 0; i < k; i++) {
        if (!p->order[i]) continue;
        if (!p->pairs[i]->value.p) {
            dels = true;
            continue;
        }
        jsonw_keyn(out, p->pairs[i]->name.p, p->pairs[i]->name.n);
        jsonw_strn(out, p->pairs[i]->value.p, p->pairs[i]->value.n);
    }
    jsonw_raw(out, "}");
    if (!dels) return;
    jsonw_key(out, "adel");
    jsonw_raw(out, "[");
    for (int i = 0; i < k; i++) {
        if (!p->order[i] || p->pairs[i]->value.p) continue;
        jsonw_elem(out);
        jsonw_strn(out, p->pairs[i]->name.p, p->pairs[i]->name.n);
    }
    jsonw_raw(out, "]");
}

/* Item i as one record of customer_metadata_merge; chain: the composition of item i (the
 * key's first) and the key's later items: each field as the last item that gives it, the
 * attributes patches composed, eventId and source of the last item. */
static void write_record(mw_plan *p, jsonw *out, int i, bool chain) {
    const mw_plan_item *last = &p->items[i];
    bool has_attrs = false;
    const mw_str *f[F_COUNT] = {0};
    for (int j = i; j >= 0; j = chain ? p->items[j].next_in_row : -1) {
        const mw_item *it = p->items[j].item;
        for (int k = 0; k < F_COUNT; k++)
            if (it->f[k].p) f[k] = &it->f[k];
        has_attrs |= it->has_attrs;
        last = &p->items[j];
    }
    jsonw_elem(out);
    jsonw_raw(out, "{");
    for (int k = 0; k < F_COUNT; k++) {
        if (!f[k]) continue;
        jsonw_key(out, doc_keys[k]);
        jsonw_strn(out, f[k]->p, f[k]->n);
    }
    if (has_attrs) write_patch(p, out, i, chain);
    jsonw_key(out, "part"); jsonw_int(out, last->partition);
    jsonw_key(out, "off"); jsonw_int(out, last->offset);
    jsonw_key(out, "idx"); jsonw_int(out, last->item->index);
    jsonw_raw(out, "}");
}

/* p->active holds, in key order, the next item of each key that has items left: a
 * generation writes them and replaces each by its key's next item, dropping finished keys.
 * Each step writes one record, so the whole is O(items) whatever the generations. nested:
 * each generation its own array; else one flat array (the slow path's order). */
static void write_generations(mw_plan *p, jsonw *out, bool nested) {
    int n = p->n_rows;
    for (int r = 0; r < n; r++) p->active[r] = p->rows[r].first;
    jsonw_raw(out, "[");
    while (n > 0) {
        if (nested) {
            jsonw_elem(out);
            jsonw_raw(out, "[");
        }
        int kept = 0;
        for (int j = 0; j < n; j++) {
            int i = p->active[j];
            write_record(p, out, i, false);
            if (p->items[i].next_in_row >= 0) p->active[kept++] = p->items[i].next_in_row;
        }
        n = kept;
        if (nested) jsonw_raw(out, "]");
    }
    jsonw_raw(out, "]");
}

void plan_rows_json(mw_plan *p, jsonw *out) { write_generations(p, out, true); }

void plan_isolated_json(mw_plan *p, jsonw *out) { write_generations(p, out, false); }

void plan_items_json(mw_plan *p, jsonw *out) {
    jsonw_raw(out, "[");
    for (int i = 0; i < p->n_items; i++) write_record(p, out, i, false);
    jsonw_raw(out, "]");
}

void plan_merged_json(mw_plan *p, jsonw *out) {
    jsonw_raw(out, "[");
    for (int r = 0; r < p->n_rows; r++) write_record(p, out, p->rows[r].first, true);
    jsonw_raw(out, "]");
}
