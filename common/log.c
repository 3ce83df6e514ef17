/*
 * log: one JSON object per line on stderr. Each line is formatted in a local buffer and
 * written with a single fwrite so lines from librdkafka's threads never interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonw.h"

/* Set once at start-up before any thread exists, read-only afterwards. */
static enum log_level min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    if (strcmp(name, "warning") == 0) return LOG_WARN;
    return -1;
}

const char *log_level_name(enum log_level lvl) {
    return (lvl >= LOG_DEBUG && lvl <= LOG_ERROR) ? level_names[lvl] : "info";
}

void log_set_level(enum log_level lvl) { min_level = lvl; }

bool log_enabled(enum log_level lvl) { return lvl >= min_level; }

/* Registered before any thread exists, read-only afterwards (like min_level). */
static char *secrets[LOG_MAX_SECRETS];
static size_t n_secrets;

void log_add_secret(const char *secret) {
    if (!secret || strlen(secret) < LOG_SECRET_MIN || n_secrets == LOG_MAX_SECRETS) return;
    for (size_t i = 0; i < n_secrets; i++)
        if (strcmp(secrets[i], secret) == 0) return;
    char *dup = strdup(secret);
    if (dup) secrets[n_secrets++] = dup;
}

/* The first occurrence of a registered secret in s (and its length), or NULL. */
static const char *find_secret(const char *s, size_t *len) {
    const char *best = NULL;
    for (size_t i = 0; i < n_secrets; i++) {
        const char *p = strstr(s, secrets[i]);
        if (p && (!best || p < best || (p == best && strlen(secrets[i]) > *len))) {
            best = p;
            *len = strlen(secrets[i]);
        }
    }
    return best;
}

/* Writes s as a JSON string with every registered secret replaced. */
static void put_scrubbed(jsonw *w, const char *s) {
    size_t len = 0;
    const char *p = n_secrets ? find_secret(s, &len) : NULL;
    if (!p) {
        jsonw_str(w, s);
        return;
    }
    jsonw tmp;
    jsonw_init(&tmp);
    while (p) {
        jsonw_rawn(&tmp, s, (size_t)(p - s));
        jsonw_raw(&tmp, "[redacted]");
        s = p + len;
        len = 0;
        p = find_secret(s, &len);
    }
    jsonw_raw(&tmp, s);
    if (tmp.oom) jsonw_str(w, "[redacted: out of memory]");
    else jsonw_strn(w, tmp.buf, tmp.len);
    jsonw_free(&tmp);
}

void log_scrub(const char *s, char *out, size_t out_size) {
    size_t o = 0, len = 0;
    const char *p;
    while (o + 1 < out_size && *s) {
        if (n_secrets && (p = find_secret(s, &len)) == s) {
            const char *r = "[redacted]";
            while (*r && o + 1 < out_size) out[o++] = *r++;
            s += len;
            len = 0;
            continue;
        }
        out[o++] = *s++;
    }
    out[o] = '\0';
}

void log_write(enum log_level lvl, const char *msg, ...) {
    if (!log_enabled(lvl)) return;

    char tbuf[40];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof tbuf - n, ".%03ldZ", ts.tv_nsec / 1000000);

    jsonw w;
    jsonw_init(&w);
    jsonw_raw(&w, "{");
    jsonw_key(&w, "time"); jsonw_str(&w, tbuf);
    jsonw_key(&w, "level"); jsonw_str(&w, log_level_name(lvl));
    jsonw_key(&w, "msg"); put_scrubbed(&w, msg ? msg : "");

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key) break;
        int type = va_arg(ap, int);
        jsonw_key(&w, key);
        if (type == 's') {
            const char *v = va_arg(ap, const char *);
            if (v) put_scrubbed(&w, v); else jsonw_raw(&w, "null");
        } else if (type == 'i') {
            jsonw_int(&w, va_arg(ap, long long));
        } else {
            jsonw_double(&w, va_arg(ap, double));
        }
    }
    va_end(ap);
    jsonw_raw(&w, "}\n");

    if (!w.oom) fwrite(w.buf, 1, w.len, stderr);
    jsonw_free(&w);
}
