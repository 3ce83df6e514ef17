/* result: result messages and the API response; see result.h. */
#include "result.h"

const char *result_item_error(const mw_item *it, const char *db_error) {
    if (it->error) return it->error;
    return db_error ? db_error : "";
}

static void str_or_null(jsonw *out, const mw_str *s) {
    if (s->p) jsonw_strn(out, s->p, s->n);
    else jsonw_raw(out, "null");
}

void result_message(jsonw *out, const mw_batch *b, const mw_item *it, const char *error,
                    int error_count) {
    static const mw_str none = {0};
    jsonw_raw(out, "{");
    jsonw_key(out, "eventId");
    if (it) jsonw_strn(out, it->f[F_EVENT].p, it->f[F_EVENT].n);
    else jsonw_str(out, b->bad_event_id);
    jsonw_key(out, "error"); jsonw_str(out, error);
    jsonw_key(out, "externalCustomerId"); str_or_null(out, it ? &it->f[F_CUSTOMER] : &none);
    jsonw_key(out, "externalConversationId");
    str_or_null(out, it ? &it->f[F_CONVERSATION] : &none);
    jsonw_key(out, "source");
    jsonw_raw(out, "{");
    jsonw_key(out, "topic"); jsonw_str(out, b->src.topic ? b->src.topic : "");
    jsonw_key(out, "partition"); jsonw_int(out, b->src.partition);
    jsonw_key(out, "offset"); jsonw_int(out, b->src.offset);
    jsonw_key(out, "index"); jsonw_int(out, it ? it->index : 0);
    jsonw_raw(out, "}");
    jsonw_key(out, "batch");
    jsonw_raw(out, "{");
    jsonw_key(out, "itemCount"); jsonw_int(out, b->n_items);
    jsonw_key(out, "errorCount"); jsonw_int(out, error_count);
    jsonw_raw(out, "}}");
}

void result_response(jsonw *out, const mw_batch *b) {
    jsonw_raw(out, "{");
    jsonw_key(out, "errorCount");
    jsonw_int(out, b->bad_request ? 1 : b->invalid_count);
    jsonw_key(out, "results");
    jsonw_raw(out, "[");
    if (b->bad_request) {
        jsonw_elem(out);
        jsonw_raw(out, "{");
        jsonw_key(out, "eventId"); jsonw_str(out, b->bad_event_id);
        jsonw_key(out, "error"); jsonw_str(out, b->bad_request);
        jsonw_raw(out, "}");
    }
    for (int i = 0; i < b->n_items; i++) {
        const mw_item *it = &b->items[i];
        jsonw_elem(out);
        jsonw_raw(out, "{");
        jsonw_key(out, "eventId"); jsonw_strn(out, it->f[F_EVENT].p, it->f[F_EVENT].n);
        jsonw_key(out, "error"); jsonw_str(out, result_item_error(it, NULL));
        jsonw_raw(out, "}");
    }
    jsonw_raw(out, "]}");
}
