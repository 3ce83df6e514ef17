/*
 * fuzz_api: a libFuzzer target on the API's request path (worker/api_request.c, the very
 * functions worker/api.c calls, without a network or Kafka) and on the API_KEYS_FILE parser
 * and secrets of worker/apikeys.c. Built and run by build.sh and run.sh beside this file
 * (run.sh api), under AddressSanitizer + UndefinedBehaviorSanitizer.
 *
 * Input framing (corpus-api/ has examples). Byte 0 == 0xFF: keys-file mode, the rest is the
 * file's text. Otherwise a request:
 *   [0] method  [1] path  [2] Content-Type  [3] asapp-api-id  [4] asapp-api-secret
 *   [5] Content-Length  [6] Kafka partition  [7] body chunk size  [8..11] Kafka offset (LE)
 *   then, for each of method, path, Content-Type, id, secret, Content-Length (in that order)
 *   whose selector chose "from the input": one length byte and that many bytes (the value
 *   ends at its first NUL, as a header would); the rest is the body.
 * A selector byte below 0x80 picks the right value (POST, the route, application/json, the
 * client "acme", its secret, the exact length), so most mutations reach the body; the others
 * pick a wrong variant, an absent header, or a value from the input.
 *
 * Invariants of a request (besides no memory error, leak or undefined behaviour):
 *   - the status is exactly the model's: 404 unless the route, 405 unless POST, 401 unless a
 *     known id with its own secret, 415 unless application/json, 413 for a bad or too large
 *     Content-Length or a body over the limit, 400 when the body (as validate decodes it) is
 *     not a batch or has no valid item, else 200; nothing else (no 500, no 0);
 *   - produced only when 200; the client is set from the credentials on, "" before;
 *   - a 200 body is byte for byte validate's response (result_response) for the body at the
 *     fake source {topic, partition, offset}, whose decoding has a valid item; a 400 body is
 *     validate's response at topic/0/0; every other body is {"error": "<its message>"}, and
 *     every 401 body is the same bytes whatever is wrong;
 *   - every body is a strict JSON object (jsoncheck and json-c strict) in valid UTF-8;
 *   - handling is deterministic (twice, the same answer) and reading the body in chunks as
 *     api.c does refuses it (413) exactly when the whole body is over the limit.
 * Invariants of a keys file:
 *   - apikeys_parse never crashes; it loads the file exactly when an independent model of
 *     the format (docs/contract.md §8, apikeys.h) does, with as many clients, and otherwise
 *     names the model's first bad line ("keys:LINE: reason"); apikeys_load of the same bytes
 *     (a memfd, no disk) agrees;
 *   - a loaded table answers lookups consistently: each client verifies with a secret
 *     exactly when the model's hash is that secret's SHA-256, and returns its own id; an
 *     unknown or absent id, or an absent secret, never verifies;
 *   - apikeys_new_secret accepts exactly the valid ids; its line parses, and appended to a
 *     good file, its secret verifies for its id and no one-byte change of it does.
 */
#define _GNU_SOURCE
#include <gnutls/crypto.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "api_request.h"
#include "apikeys.h"
#include "batch.h"
#include "jsoncheck.h"
#include "jsonw.h"
#include "result.h"
#include "utf8.h"

#define MAX_BODY 16384 /* API_MAX_BODY_BYTES here: small, so 413 is reached by the body too */
#define MAX_ITEMS 1000
#define TOPIC "customer-metadata.batches"
#define KNOWN_SECRET "fuzz-known-secret" /* keys mode: corpus-api/keys-* hash this one */

#define FUZZ_NAME "fuzz_api"
#include "fuzz_check.h"

/* The request mode's clients. */
static const struct { const char *id, *secret; } clients[] = {
    {"acme", "acme-secret-0123456789abcdefghijklmnopqrs"},
    {"beta.client_2", "beta-secret"},
};
#define N_CLIENTS (sizeof clients / sizeof clients[0])

static mw_apikeys *keys;
static json_tokener *tok;
static char *first_401; /* the first 401 body seen: every other one must equal it */
static int memfd = -1;
static char memfd_path[64];
static unsigned char known_hash[32];
static bool verbose; /* FUZZ_API_VERBOSE=1: one line per input (replaying a corpus) */

static void sha256(const void *p, size_t n, unsigned char out[32]) {
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, p, n, out) != 0) abort();
}

static void hex(const unsigned char *h, char out[65]) {
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char text[1024], hx[65];
    unsigned char h[32];
    int o = snprintf(text, sizeof text, "# the fuzz target's clients\n");
    for (size_t i = 0; i < N_CLIENTS; i++) {
        sha256(clients[i].secret, strlen(clients[i].secret), h);
        hex(h, hx);
        o += snprintf(text + o, sizeof text - (size_t)o, "%s sha256:%s\n", clients[i].id, hx);
    }
    char err[256];
    keys = apikeys_parse(text, (size_t)o, "fuzz", err, sizeof err);
    if (!keys || apikeys_count(keys) != (int)N_CLIENTS) {
        fprintf(stderr, "fuzz_api: the clients' keys: %s\n", keys ? "count" : err);
        abort();
    }
    tok = json_tokener_new_ex(MW_JSON_MAX_DEPTH);
    if (!tok) abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    memfd = memfd_create("fuzz-keys", 0);
    if (memfd < 0) abort();
    snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
    sha256(KNOWN_SECRET, strlen(KNOWN_SECRET), known_hash);
    verbose = getenv("FUZZ_API_VERBOSE") && strcmp(getenv("FUZZ_API_VERBOSE"), "1") == 0;
    return 0;
}

/* ---- the framing ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t n;
} cursor;

/* One selector: < 0x80 the right value (0), else variant 1 .. n_variants-1. */
static int pick(uint8_t b, int n_variants) { return b < 0x80 ? 0 : 1 + (b - 0x80) % (n_variants - 1); }

/* A value from the input: a length byte and that many bytes, up to the first NUL. */
static char *take_value(cursor *c) {
    size_t n = 0;
    if (c->n) {
        n = c->p[0];
        c->p++, c->n--;
    }
    if (n > c->n) n = c->n;
    char *v = strndup((const char *)c->p, n);
    if (!v) abort();
    c->p += n, c->n -= n;
    return v;
}

#define FROM_INPUT ((const char *)1) /* a variant taken from the input */

static const char *const methods[] = {"POST", "GET", "PUT", "post", "HEAD", "OPTIONS",
                                      "DELETE", "PATCH", "POST ", "", FROM_INPUT};
static const char *const paths[] = {
    API_ROUTE, "/", API_ROUTE "/", "/metadata-ingestion/v1/many-customer-metadatA",
    "/metadata-ingestion/v1/", "//metadata-ingestion/v1/many-customer-metadata",
    "/METADATA-INGESTION/V1/MANY-CUSTOMER-METADATA", API_ROUTE "x", "", FROM_INPUT};
/* NULL: header absent. */
static const char *const content_types[] = {
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    " \tapplication/json", "application/json ", "application/json;", NULL, "", "text/plain",
    "application/jsonx", "application/json-patch+json", "application/x-json", "application",
    "json", FROM_INPUT};
enum { ID_ACME, ID_BETA, ID_NONE, ID_EMPTY, ID_UNKNOWN, ID_UPPER, ID_SPACE, ID_LONG, ID_INPUT, ID_N };
enum { SEC_RIGHT, SEC_OTHER, SEC_NONE, SEC_EMPTY, SEC_LONGER, SEC_SHORTER, SEC_CASE, SEC_INPUT,
       SEC_N };
enum { CL_EXACT, CL_NONE, CL_OVER, CL_GARBAGE, CL_NEGATIVE, CL_OVERFLOW, CL_INPUT, CL_N };

typedef struct {
    const char *ct, *id, *secret, *cl;
} headers;

static const char *lookup(void *ctx, const char *name) {
    const headers *h = ctx;
    if (strcasecmp(name, "Content-Type") == 0) return h->ct;
    if (strcasecmp(name, "asapp-api-id") == 0) return h->id;
    if (strcasecmp(name, "asapp-api-secret") == 0) return h->secret;
    if (strcasecmp(name, "Content-Length") == 0) return h->cl;
    return NULL;
}

/* ---- the model ---------------------------------------------------------------------------- */

static bool model_is_json(const char *ct) {
    if (!ct) return false;
    size_t i = strspn(ct, " \t");
    const char *want = "application/json";
    for (size_t k = 0; want[k]; k++, i++) {
        char ch = ct[i];
        if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        if (ch != want[k]) return false;
    }
    return ct[i] == '\0' || ct[i] == ';' || ct[i] == ' ' || ct[i] == '\t';
}

static bool model_credentials(const char *id, const char *secret) {
    if (!id || !secret) return false;
    for (size_t i = 0; i < N_CLIENTS; i++)
        if (strcmp(id, clients[i].id) == 0) return strcmp(secret, clients[i].secret) == 0;
    return false;
}

/* Content-Length: 1 refused (413), 0 accepted, -1 either (strtoull's leniency: leading
 * blanks and a sign, which libmicrohttpd does not let through anyway). */
static int model_length_refused(const char *cl) {
    if (!cl) return 0;
    size_t n = strlen(cl);
    if (n > 0 && strspn(cl, "0123456789") == n) {
        size_t d = n - strspn(cl, "0"); /* significant digits */
        if (d > 19) return 1;
        return strtoull(cl, NULL, 10) > MAX_BODY;
    }
    if (strspn(cl, "0123456789 \t\n\v\f\r+-") != n || n == 0) return n == 0 ? -1 : 1;
    return -1;
}

static const char *error_message(int status) {
    switch (status) {
    case 404: return "not found";
    case 405: return "method not allowed";
    case 401: return "unauthorized";
    case 415: return "Content-Type must be application/json";
    case 413: return "request body too large";
    }
    return NULL;
}

/* ---- the bodies ------------------------------------------------------------------------- */

static json_object *strict_object(const char *buf, size_t len, int status) {
    CHECK(buf && len > 0, "%d: empty body", status);
    size_t bad = 0;
    CHECK(utf8_valid(buf, len, &bad), "%d: body not UTF-8 at byte %zu", status, bad);
    const char *why = NULL;
    size_t at = 0;
    CHECK(jsoncheck_valid(buf, len, MW_JSON_MAX_DEPTH, &why, &at),
          "%d: body not strict JSON (%s at %zu): %.*s", status, why, at, (int)len, buf);
    json_tokener_reset(tok);
    json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
    CHECK(o && json_tokener_get_error(tok) == json_tokener_success &&
              json_tokener_get_parse_end(tok) == len && json_object_is_type(o, json_type_object),
          "%d: json-c: not one JSON object: %.*s", status, (int)len, buf);
    return o;
}

/* validate's output for body at src (without its newline). */
static char *validate_output(const char *body, size_t len, const mw_source *src, size_t *out_len,
                             mw_batch *b) {
    CHECK(batch_decode(b, body ? body : "", len, src, MAX_ITEMS) == 0, "batch_decode: memory");
    jsonw w;
    jsonw_init(&w);
    result_response(&w, b);
    CHECK(!w.oom, "result_response: memory");
    *out_len = w.len;
    return jsonw_take(&w);
}

/* ---- a request ---------------------------------------------------------------------------- */

static void fuzz_request(const uint8_t *data, size_t size) {
    if (size < 12) return;
    cursor c = {data + 12, size - 12};
    int vm = pick(data[0], sizeof methods / sizeof *methods);
    int vp = pick(data[1], sizeof paths / sizeof *paths);
    int vct = pick(data[2], sizeof content_types / sizeof *content_types);
    int vid = pick(data[3], ID_N), vsec = pick(data[4], SEC_N), vcl = pick(data[5], CL_N);
    mw_source src = {TOPIC, data[6], (int64_t)((uint32_t)data[8] | (uint32_t)data[9] << 8 |
                                               (uint32_t)data[10] << 16 |
                                               (uint32_t)data[11] << 24)};
    size_t chunk = 1 + (size_t)data[7] * 67;

    char *owned[6] = {NULL};
    const char *method = methods[vm];
    if (method == FROM_INPUT) method = owned[0] = take_value(&c);
    const char *path = paths[vp];
    if (path == FROM_INPUT) path = owned[1] = take_value(&c);
    headers h = {content_types[vct], NULL, NULL, NULL};
    if (h.ct == FROM_INPUT) h.ct = owned[2] = take_value(&c);
    char long_id[APIKEYS_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    switch (vid) {
    case ID_ACME: h.id = "acme"; break;
    case ID_BETA: h.id = "beta.client_2"; break;
    case ID_NONE: break;
    case ID_EMPTY: h.id = ""; break;
    case ID_UNKNOWN: h.id = "nobody"; break;
    case ID_UPPER: h.id = "ACME"; break;
    case ID_SPACE: h.id = "acme "; break;
    case ID_LONG: h.id = long_id; break;
    default: h.id = owned[3] = take_value(&c); break;
    }
    const char *right = h.id && strcmp(h.id, "beta.client_2") == 0 ? clients[1].secret
                                                                     : clients[0].secret;
    const char *other = right == clients[0].secret ? clients[1].secret : clients[0].secret;
    char variant[128];
    snprintf(variant, sizeof variant, "%s", right);
    switch (vsec) {
    case SEC_RIGHT: h.secret = right; break;
    case SEC_OTHER: h.secret = other; break;
    case SEC_NONE: break;
    case SEC_EMPTY: h.secret = ""; break;
    case SEC_LONGER: strcat(variant, "x"); h.secret = variant; break;
    case SEC_SHORTER: variant[strlen(variant) - 1] = '\0'; h.secret = variant; break;
    case SEC_CASE: variant[0] = (char)(variant[0] - 'a' + 'A'); h.secret = variant; break;
    default: h.secret = owned[4] = take_value(&c); break;
    }
    char cl_buf[32];
    switch (vcl) {
    case CL_NONE: break;
    case CL_OVER: snprintf(cl_buf, sizeof cl_buf, "%d", MAX_BODY + 1); h.cl = cl_buf; break;
    case CL_GARBAGE: h.cl = "12a"; break;
    case CL_NEGATIVE: h.cl = "-1"; break;
    case CL_OVERFLOW: h.cl = "99999999999999999999999"; break;
    case CL_INPUT: h.cl = owned[5] = take_value(&c); break;
    default: h.cl = cl_buf; break; /* CL_EXACT, set below */
    }
    const uint8_t *body_p = c.p; /* the rest, after the values taken */
    size_t body_len = c.n;
    /* The body in its own allocation, so ASan sees any read past it. */
    char *body = malloc(body_len ? body_len : 1);
    if (!body) abort();
    memcpy(body, body_p, body_len);
    if (vcl == CL_EXACT) snprintf(cl_buf, sizeof cl_buf, "%zu", body_len);

    /* The model. */
    int want = 0;
    int length_refused = model_length_refused(h.cl);
    bool creds = model_credentials(h.id, h.secret);
    if (strcmp(path, API_ROUTE) != 0) want = 404;
    else if (strcmp(method, "POST") != 0) want = 405;
    else if (!creds) want = 401;
    else if (!model_is_json(h.ct)) want = 415;
    else if (length_refused == 1 || body_len > MAX_BODY) want = 413;

    mw_api_request req = {method, path, lookup, &h, body, body_len};
    mw_api_resp r;
    api_request_init(&r);
    int status = api_request_handle(&r, &req, keys, MAX_BODY, MAX_ITEMS, &src);
    CHECK(status == r.status, "returned %d, status %d", status, r.status);
    CHECK(status == 200 || status == 400 || status == 401 || status == 404 || status == 405 ||
              status == 413 || status == 415,
          "status %d", status);
    CHECK(r.produce == (status == 200), "status %d, produce %d", status, r.produce);
    CHECK(!r.body.oom, "body: out of memory");
    if (length_refused == -1 && want == 0 && status == 413) want = 413; /* lenient length */
    if (!want) {
        /* Past the headers and the size: validate's decision on the body. */
        mw_source zero = {TOPIC, 0, 0};
        mw_batch b;
        size_t vlen;
        char *v = validate_output(body, body_len, &zero, &vlen, &b);
        want = b.bad_request || b.invalid_count == b.n_items ? 400 : 200;
        if (want == 400)
            CHECK(r.body.len == vlen && memcmp(r.body.buf, v, vlen) == 0,
                  "400 body differs from validate's:\n  api:      %.*s\n  validate: %s",
                  (int)r.body.len, r.body.buf, v);
        batch_free(&b);
        free(v);
    }
    CHECK(status == want, "status %d, the model says %d (method \"%s\" path \"%s\" ct %s id %s "
          "secret-variant %d cl %s, %zu-byte body)", status, want, method, path,
          h.ct ? h.ct : "(none)", h.id ? h.id : "(none)", vsec, h.cl ? h.cl : "(none)", body_len);

    if (verbose)
        fprintf(stderr, "fuzz_api: request: %d%s %.*s\n", status, r.produce ? " produced" : "",
                (int)(r.body.len < 100 ? r.body.len : 100), r.body.buf);
    json_object *o = strict_object(r.body.buf, r.body.len, status);
    if (status == 200) {
        mw_batch b;
        size_t vlen;
        char *v = validate_output(body, body_len, &src, &vlen, &b);
        CHECK(!b.bad_request && b.invalid_count < b.n_items,
              "200 for a body that at its source is not a batch with a valid item");
        CHECK(r.body.len == vlen && memcmp(r.body.buf, v, vlen) == 0,
              "200 body differs from validate's at %d/%lld:\n  api:      %.*s\n  validate: %s",
              (int)src.partition, (long long)src.offset, (int)r.body.len, r.body.buf, v);
        CHECK(r.items == b.n_items, "items %d, batch %d", r.items, b.n_items);
        batch_free(&b);
        free(v);
    } else if (status != 400) {
        const char *msg = error_message(status);
        CHECK(json_object_object_length(o) == 1, "%d: more than \"error\"", status);
        json_object *e = NULL;
        CHECK(json_object_object_get_ex(o, "error", &e) && json_object_is_type(e, json_type_string) &&
                  strcmp(json_object_get_string(e), msg) == 0,
              "%d: body %s", status, r.body.buf);
    }
    json_object_put(o);
    if (status == 401) {
        if (!first_401) first_401 = strdup(r.body.buf);
        CHECK(first_401 && strcmp(first_401, r.body.buf) == 0, "401 bodies differ: %s, then %s",
              first_401, r.body.buf);
    }
    if (status == 404 || status == 405 || status == 401)
        CHECK(r.client[0] == '\0', "%d with client \"%s\"", status, r.client);
    else
        CHECK(strcmp(r.client, h.id) == 0, "%d: client \"%s\", id \"%s\"", status, r.client, h.id);

    /* Deterministic: the same request, the same answer. */
    mw_api_resp again;
    api_request_init(&again);
    api_request_handle(&again, &req, keys, MAX_BODY, MAX_ITEMS, &src);
    CHECK(again.status == r.status && again.produce == r.produce && again.body.len == r.body.len &&
              memcmp(again.body.buf, r.body.buf, r.body.len) == 0,
          "a second handling differs: %d then %d", r.status, again.status);
    api_request_free(&again);

    /* The body read in chunks, as api.c's on_body does: 413 exactly when it is too large. */
    mw_api_resp chunks;
    api_request_init(&chunks);
    int refused = 0;
    for (size_t have = 0; have < body_len && !refused;) {
        size_t n = body_len - have < chunk ? body_len - have : chunk;
        refused = api_request_body(&chunks, have, n, MAX_BODY);
        have += n;
    }
    CHECK((refused == 413) == (body_len > MAX_BODY) && (refused == 0 || refused == 413),
          "chunks of %zu: %d for a %zu-byte body", chunk, refused, body_len);
    api_request_free(&chunks);

    api_request_free(&r);
    free(body);
    for (int i = 0; i < 6; i++) free(owned[i]);
}

/* ---- a keys file -------------------------------------------------------------------------- */

typedef struct {
    char id[APIKEYS_ID_MAX + 1];
    unsigned char hash[32];
} model_client;

static bool id_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

static bool model_valid_id(const char *s, size_t n) {
    if (n < 1 || n > APIKEYS_ID_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char(s[i])) return false;
    return true;
}

static int hexdigit(char ch) {
    const char *d = "0123456789abcdef", *u = "0123456789ABCDEF";
    for (int i = 0; i < 16; i++)
        if (ch == d[i] || ch == u[i]) return i;
    return -1;
}

/* The format by the book: returns 0 and the clients, or the first bad line's number. */
static int model_keys(const char *text, size_t len, model_client **out, int *n_out) {
    model_client *mc = NULL;
    int n = 0;
    int line = 0;
    for (size_t pos = 0; pos < len;) {
        line++;
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        const char *s = text + pos;
        size_t l = end - pos;
        pos = end < len ? end + 1 : end;
        if (memchr(s, '\0', l)) goto bad;
        const char *hash = memchr(s, '#', l);
        if (hash) l = (size_t)(hash - s);
        /* Fields separated by spaces, tabs and carriage returns. */
        const char *f[3];
        size_t fl[3];
        int nf = 0;
        for (size_t i = 0; i < l;) {
            if (s[i] == ' ' || s[i] == '\t' || s[i] == '\r') { i++; continue; }
            size_t j = i;
            while (j < l && s[j] != ' ' && s[j] != '\t' && s[j] != '\r') j++;
            if (nf == 3) goto bad;
            f[nf] = s + i, fl[nf] = j - i, nf++;
            i = j;
        }
        if (nf == 0) continue;
        if (nf != 2 || !model_valid_id(f[0], fl[0])) goto bad;
        if (fl[1] != 7 + 64 || memcmp(f[1], "sha256:", 7) != 0) goto bad;
        model_client c;
        for (int k = 0; k < 32; k++) {
            int hi = hexdigit(f[1][7 + 2 * k]), lo = hexdigit(f[1][8 + 2 * k]);
            if (hi < 0 || lo < 0) goto bad;
            c.hash[k] = (unsigned char)(hi * 16 + lo);
        }
        memcpy(c.id, f[0], fl[0]);
        c.id[fl[0]] = '\0';
        for (int k = 0; k < n; k++)
            if (strcmp(mc[k].id, c.id) == 0) goto bad;
        model_client *m2 = realloc(mc, (size_t)(n + 1) * sizeof *mc);
        if (!m2) abort();
        mc = m2;
        mc[n++] = c;
    }
    *out = mc;
    *n_out = n;
    return 0;
bad:
    free(mc);
    *out = NULL;
    *n_out = 0;
    return line;
}

static mw_apikeys *load_via_file(const uint8_t *data, size_t size, char *err, size_t err_size) {
    if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size) abort();
    return apikeys_load(memfd_path, err, err_size);
}

static void fuzz_keys(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    char err[512] = "", err2[512] = "";
    mw_apikeys *k = apikeys_parse(text, size, "keys", err, sizeof err);
    model_client *mc;
    int n;
    int bad_line = model_keys(text, size, &mc, &n);
    if (verbose && k) fprintf(stderr, "fuzz_api: keys file: %d clients\n", apikeys_count(k));
    if (verbose && !k) fprintf(stderr, "fuzz_api: keys file: %s\n", err);
    if (bad_line) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "keys:%d: ", bad_line);
        CHECK(!k, "loaded a file whose line %d is bad", bad_line);
        CHECK(strncmp(err, prefix, strlen(prefix)) == 0 && strlen(err) > strlen(prefix),
              "error \"%s\", the model's bad line %d", err, bad_line);
    } else {
        CHECK(k, "refused a good file: %s", err);
        CHECK(apikeys_count(k) == n, "%d clients, the model %d", apikeys_count(k), n);
        for (int i = 0; i < n; i++) {
            const char *got = apikeys_check(k, mc[i].id, KNOWN_SECRET, strlen(KNOWN_SECRET));
            bool known = memcmp(mc[i].hash, known_hash, 32) == 0;
            CHECK(known ? got && strcmp(got, mc[i].id) == 0 : got == NULL,
                  "client %s with the known secret: %s", mc[i].id, got ? got : "(refused)");
            CHECK(!apikeys_check(k, mc[i].id, NULL, 0), "client %s verifies without a secret",
                  mc[i].id);
            CHECK(apikeys_take(k, mc[i].id, 0, 5, 1000) == 0, "rate 0 limits %s", mc[i].id);
        }
        CHECK(!apikeys_check(k, NULL, KNOWN_SECRET, strlen(KNOWN_SECRET)), "no id verifies");
        CHECK(!apikeys_check(k, "no such id!", KNOWN_SECRET, strlen(KNOWN_SECRET)),
              "an impossible id verifies");
    }
    /* The same bytes through a file. */
    mw_apikeys *k2 = load_via_file(data, size, err2, sizeof err2);
    CHECK(!k == !k2, "parse %s, load %s", k ? "loads" : err, k2 ? "loads" : err2);
    if (k) {
        CHECK(apikeys_count(k2) == apikeys_count(k), "load: %d clients, parse %d",
              apikeys_count(k2), apikeys_count(k));
        apikeys_carry_buckets(k2, k);
    } else {
        const char *colon = strchr(err, ':');
        size_t pl = strlen(memfd_path);
        CHECK(colon && strncmp(err2, memfd_path, pl) == 0 && strcmp(err2 + pl, colon) == 0,
              "load says \"%s\", parse \"%s\"", err2, err);
    }
    apikeys_free(k2);

    /* The generator, with an id from the input (its first field). */
    size_t i0 = 0;
    while (i0 < size && (text[i0] == ' ' || text[i0] == '\t')) i0++;
    size_t il = 0;
    while (i0 + il < size && il < APIKEYS_ID_MAX + 2 && text[i0 + il] != ' ' &&
           text[i0 + il] != '\n' && text[i0 + il] != '\0')
        il++;
    char id[APIKEYS_ID_MAX + 3];
    memcpy(id, text + i0, il);
    id[il] = '\0';
    char secret[APIKEYS_SECRET_LEN + 1], line[256], gerr[256];
    int rc = apikeys_new_secret(id, secret, line, sizeof line, gerr, sizeof gerr);
    CHECK((rc == 0) == model_valid_id(id, il), "generator: %d for id \"%s\"", rc, id);
    if (rc == 0) {
        CHECK(strlen(secret) == APIKEYS_SECRET_LEN - 1 && strspn(secret,
              "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
              APIKEYS_SECRET_LEN - 1, "secret %s", secret);
        mw_apikeys *g = apikeys_parse(line, strlen(line), "gen", err, sizeof err);
        CHECK(g && apikeys_count(g) == 1, "the generated line does not load: %s", err);
        const char *got = apikeys_check(g, id, secret, strlen(secret));
        CHECK(got && strcmp(got, id) == 0, "the generated secret does not verify");
        apikeys_free(g);
        /* Taken by the file: ID-new instead (when that is free and valid). */
        bool taken = false;
        for (int i = 0; i < n; i++) taken |= strcmp(mc[i].id, id) == 0;
        if (taken && il + 4 <= APIKEYS_ID_MAX) {
            memcpy(id + il, "-new", 5);
            taken = false;
            for (int i = 0; i < n; i++) taken |= strcmp(mc[i].id, id) == 0;
            CHECK(apikeys_new_secret(id, secret, line, sizeof line, gerr, sizeof gerr) == 0,
                  "generator refuses %s", id);
        }
        if (k && !taken && size > 0) {
            /* Appended to this (good) file. */
            size_t ln = strlen(line), tn = size + 1 + ln;
            char *t = malloc(tn);
            if (!t) abort();
            memcpy(t, text, size);
            t[size] = '\n';
            memcpy(t + size + 1, line, ln);
            mw_apikeys *a = apikeys_parse(t, tn, "keys", err, sizeof err);
            CHECK(a && apikeys_count(a) == n + 1, "a good file with the generated line: %s",
                  a ? "count" : err);
            got = apikeys_check(a, id, secret, strlen(secret));
            CHECK(got && strcmp(got, id) == 0, "the generated secret does not verify in the file");
            size_t at = (size_t)data[size - 1] % strlen(secret);
            secret[at] ^= 1;
            CHECK(!apikeys_check(a, id, secret, strlen(secret)), "a changed secret verifies");
            secret[at] ^= 1;
            for (int i = 0; i < n; i++)
                CHECK(!apikeys_check(a, mc[i].id, secret, strlen(secret)),
                      "client %s verifies with another's generated secret", mc[i].id);
            apikeys_free(a);
            free(t);
        }
    }
    apikeys_free(k);
    free(mc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] == 0xFF) fuzz_keys(data + 1, size - 1);
    else fuzz_request(data, size);
    return 0;
}
