/* apikeys: API clients, secret hashes, token buckets; see apikeys.h. */
#include "apikeys.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define SHA256_LEN 32

typedef struct client {
    char id[APIKEYS_ID_MAX + 1];
    unsigned char hash[SHA256_LEN];
    double tokens;      /* the token bucket (API_RATE_LIMIT) */
    int64_t refill_ms;  /* its last refill; 0: never used (full) */
} client;

struct mw_apikeys {
    int n, cap;
    client *c;
};

/* gnutls's SHA-256 (already in the process: libmicrohttpd's TLS is built on it) rather than
 * a hand-written one: no crypto code of our own to get wrong. */
static int sha256(const void *p, size_t n, unsigned char out[SHA256_LEN]) {
    return gnutls_hash_fast(GNUTLS_DIG_SHA256, p, n, out) == 0 ? 0 : -1;
}

int apikeys_valid_id(const char *id, size_t len) {
    if (len == 0 || len > APIKEYS_ID_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static int is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; }

/* One line (no '\n'): 0 and *out filled, 1 for a blank or comment line, -1 with reason. */
static int parse_line(const char *s, size_t len, client *out, const char **reason) {
    const char *hash = memchr(s, '#', len);
    if (hash) len = (size_t)(hash - s);
    size_t i = 0;
    while (i < len && is_space(s[i])) i++;
    if (i == len) return 1;
    size_t id0 = i;
    while (i < len && !is_space(s[i])) i++;
    size_t idn = i - id0;
    while (i < len && is_space(s[i])) i++;
    size_t h0 = i;
    while (i < len && !is_space(s[i])) i++;
    size_t hn = i - h0;
    while (i < len && is_space(s[i])) i++;
    if (!apikeys_valid_id(s + id0, idn)) {
        *reason = "the id must be 1 to 64 characters of A-Z a-z 0-9 . _ -";
        return -1;
    }
    if (hn == 0) {
        *reason = "expected \"ID sha256:HEX\"";
        return -1;
    }
    if (i != len) {
        *reason = "unexpected text after the hash";
        return -1;
    }
    if (hn != 7 + 2 * SHA256_LEN || strncmp(s + h0, "sha256:", 7) != 0) {
        *reason = "the hash must be sha256: and 64 hex digits (a secret never goes in this file)";
        return -1;
    }
    for (int k = 0; k < SHA256_LEN; k++) {
        int hi = hexval(s[h0 + 7 + 2 * k]), lo = hexval(s[h0 + 8 + 2 * k]);
        if (hi < 0 || lo < 0) {
            *reason = "the hash must be sha256: and 64 hex digits";
            return -1;
        }
        out->hash[k] = (unsigned char)(hi << 4 | lo);
    }
    memcpy(out->id, s + id0, idn);
    out->id[idn] = '\0';
    out->tokens = 0;
    out->refill_ms = 0;
    return 0;
}

mw_apikeys *apikeys_parse(const char *text, size_t len, const char *name, char *errstr,
                          size_t errstr_size) {
    mw_apikeys *k = calloc(1, sizeof *k);
    if (!k) goto oom;
    size_t pos = 0;
    for (int lineno = 1; pos < len; lineno++) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        client c;
        const char *reason = NULL;
        if (memchr(text + pos, '\0', n)) {
            reason = "a NUL byte";
        } else {
            int r = parse_line(text + pos, n, &c, &reason);
            if (r == 0) {
                for (int j = 0; j < k->n && !reason; j++)
                    if (strcmp(k->c[j].id, c.id) == 0) reason = "this id is already defined";
                if (!reason) {
                    if (k->n == k->cap) {
                        int cap = k->cap ? k->cap * 2 : 8;
                        client *nc = realloc(k->c, (size_t)cap * sizeof *nc);
                        if (!nc) goto oom;
                        k->c = nc;
                        k->cap = cap;
                    }
                    k->c[k->n++] = c;
                }
            }
        }
        if (reason) {
            snprintf(errstr, errstr_size, "%s:%d: %s", name, lineno, reason);
            apikeys_free(k);
            return NULL;
        }
        pos += n + (nl ? 1 : 0);
    }
    return k;
oom:
    apikeys_free(k);
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
}

/* A keys file is small; anything over this is not one. */
#define APIKEYS_FILE_MAX (16 * 1024 * 1024)

mw_apikeys *apikeys_load(const char *path, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    mw_apikeys *k = NULL;
    while (buf) {
        if (n == cap) {
            if (cap >= APIKEYS_FILE_MAX) {
                snprintf(errstr, errstr_size, "%s: larger than 16 MiB", path);
                goto done;
            }
            char *b = realloc(buf, cap *= 2);
            if (!b) break;
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (!buf) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    if (ferror(f)) {
        snprintf(errstr, errstr_size, "%s: cannot read", path);
        goto done;
    }
    k = apikeys_parse(buf, n, path, errstr, errstr_size);
done:
    free(buf);
    fclose(f);
    return k;
}

void apikeys_free(mw_apikeys *k) {
    if (!k) return;
    free(k->c);
    free(k);
}

int apikeys_count(const mw_apikeys *k) { return k ? k->n : 0; }

static client *find(const mw_apikeys *k, const char *id) {
    for (int i = 0; k && i < k->n; i++)
        if (strcmp(k->c[i].id, id) == 0) return &k->c[i];
    return NULL;
}

const char *apikeys_check(const mw_apikeys *k, const char *id, const char *secret,
                          size_t secret_len) {
    static const unsigned char nobody[SHA256_LEN] = {0};
    unsigned char h[SHA256_LEN];
    const client *c = id ? find(k, id) : NULL;
    /* An unknown id is compared against a hash no secret has, so it costs the same. */
    const unsigned char *want = c ? c->hash : nobody;
    if (sha256(secret ? secret : "", secret ? secret_len : 0, h) != 0) return NULL;
    unsigned char diff = 0;
    for (int i = 0; i < SHA256_LEN; i++) diff |= (unsigned char)(h[i] ^ want[i]);
    return c && secret && diff == 0 ? c->id : NULL;
}

int apikeys_take(mw_apikeys *k, const char *id, int rate, int n, int64_t now_ms) {
    client *c = find(k, id);
    if (rate <= 0 || !c) return 0;
    double cap = rate;
    if (c->refill_ms == 0) c->tokens = cap;
    else c->tokens += (double)(now_ms - c->refill_ms) * rate / 1000.0;
    if (c->tokens > cap) c->tokens = cap;
    c->refill_ms = now_ms;
    double need = n < rate ? n : cap;
    if (c->tokens + 1e-9 >= need) {
        c->tokens -= n;
        return 0;
    }
    double wait = (need - c->tokens) / rate;
    int s = (int)wait;
    return s < wait || s < 1 ? s + 1 : s;
}

void apikeys_carry_buckets(mw_apikeys *to, const mw_apikeys *from) {
    for (int i = 0; to && i < to->n; i++) {
        const client *old = find(from, to->c[i].id);
        if (old) {
            to->c[i].tokens = old->tokens;
            to->c[i].refill_ms = old->refill_ms;
        }
    }
}

static void base64url(const unsigned char *in, size_t n, char *out) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18 & 63]; out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63]; out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = a[v >> 18 & 63]; out[o++] = a[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = a[v >> 18 & 63]; out[o++] = a[v >> 12 & 63]; out[o++] = a[v >> 6 & 63];
    }
    out[o] = '\0';
}

int apikeys_new_secret(const char *id, char secret[APIKEYS_SECRET_LEN + 1], char *line,
                       size_t line_size, char *errstr, size_t errstr_size) {
    if (!apikeys_valid_id(id, strlen(id))) {
        snprintf(errstr, errstr_size, "the id must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
        return -1;
    }
    unsigned char raw[APIKEYS_SECRET_BYTES];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(errstr, errstr_size, "getrandom: %s", strerror(errno));
            return -1;
        }
        got += (size_t)r;
    }
    base64url(raw, sizeof raw, secret);
    memset(raw, 0, sizeof raw);
    unsigned char h[SHA256_LEN];
    if (sha256(secret, strlen(secret), h) != 0) {
        snprintf(errstr, errstr_size, "SHA-256 failed");
        return -1;
    }
    int o = snprintf(line, line_size, "%s sha256:", id);
    for (int i = 0; i < SHA256_LEN && o > 0 && (size_t)o + 2 < line_size; i++)
        o += snprintf(line + o, line_size - (size_t)o, "%02x", h[i]);
    return 0;
}
