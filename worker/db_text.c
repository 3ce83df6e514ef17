/* db_text: libpq's messages for the log, and DATABASE_URL's check; see db_text.h. */
#include "db_text.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "db.h"

/* Copies libpq's message without its trailing newline. */
void db_copy_msg(char *errstr, size_t errstr_size, const char *prefix, const char *msg) {
    snprintf(errstr, errstr_size, "%s%s", prefix, msg ? msg : "");
    size_t n = strlen(errstr);
    while (n && (errstr[n - 1] == '\n' || errstr[n - 1] == ' ')) errstr[--n] = '\0';
}

/* libpq's conninfo parse errors quote the offending token, which may be (part of) the
 * password: every quoted token is replaced, but for libpq's own one-character tokens. */
static void scrub_quoted(const char *msg, char *out, size_t out_size) {
    size_t o = 0;
    for (const char *p = msg; *p && o + 1 < out_size;) {
        if (*p != '"') {
            out[o++] = *p++;
            continue;
        }
        const char *end = strchr(p + 1, '"');
        if (!end) break;
        /* libpq's own one-character tokens ("=", "]") stay; any other may be a secret. */
        const char *tok = end - p == 2 && strchr("=]", p[1]) ? NULL : "\"…\"";
        size_t n = tok ? strlen(tok) : 3;
        if (o + n >= out_size) break;
        memcpy(out + o, tok ? tok : p, n);
        o += n;
        p = end + 1;
    }
    while (o && (out[o - 1] == '\n' || out[o - 1] == ' ')) o--;
    out[o] = '\0';
}

/* Registers the password a URI carries, as written (percent-encoded): libpq reports the
 * decoded one, but a message could quote the text. */
static void add_uri_password(const char *url) {
    const char *p = strstr(url, "://");
    if (!p) return;
    p += 3;
    const char *at = p + strcspn(p, "@/?");
    if (*at != '@') return;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon || at - colon - 1 < 1) return;
    char buf[1024];
    size_t n = (size_t)(at - colon - 1);
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, colon + 1, n);
    buf[n] = '\0';
    log_add_secret(buf);
}

int db_conninfo_check(const char *url, char *errstr, size_t errstr_size) {
    log_add_secret(getenv("PGPASSWORD"));
    if (!url) return 0;
    add_uri_password(url);
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    if (!opts) {
        char clean[512];
        scrub_quoted(err ? err : "out of memory", clean, sizeof clean);
        snprintf(errstr, errstr_size, "DATABASE_URL is not a valid libpq connection string or URI: %s",
                 clean);
        PQfreemem(err);
        return -1;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && strcmp(o->keyword, "password") == 0) log_add_secret(o->val);
    PQconninfoFree(opts);
    return 0;
}

/* The SQLSTATE in a message written with PQERRORS_VERBOSE ("FATAL:  28P01:  …"), copied
 * into state[6]; false when there is none (the server was not reached, or the client gave
 * up on its own). */
bool db_message_sqlstate(const char *msg, char state[6]) {
    for (const char *p = msg; (p = strstr(p, ":  ")) != NULL; p++) {
        const char *c = p + 3;
        bool ok = strlen(c) > 6 && c[5] == ':';
        for (int i = 0; ok && i < 5; i++)
            ok = (c[i] >= '0' && c[i] <= '9') || (c[i] >= 'A' && c[i] <= 'Z');
        if (ok) {
            memcpy(state, c, 5);
            state[5] = '\0';
            return true;
        }
    }
    return false;
}

/* A connection failure's message for the log: libpq's text without the LOCATION lines of
 * the verbose form and with the SQLSTATE (if any) moved to the end. */
void db_connect_message(char *errstr, size_t errstr_size, const char *msg, const char *state,
                            bool fatal) {
    char buf[1024], line[512], prev[512] = "";
    size_t o = 0;
    for (const char *p = msg; *p;) {
        size_t len = strcspn(p, "\n"), l = 0;
        const char *next = p[len] ? p + len + 1 : p + len;
        if (strncmp(p, "LOCATION:", 9) == 0 || len == 0) {
            p = next;
            continue;
        }
        /* The line, with its "28P01:  " after the severity dropped and tabs as spaces. */
        const char *s = state ? strstr(p, state) : NULL;
        if (s && (s >= p + len || s[5] != ':')) s = NULL;
        for (const char *q = p; q < p + len && l + 1 < sizeof line; q++) {
            if (q == s) {
                q += 5;
                while (q + 1 < p + len && q[1] == ' ') q++;
                continue;
            }
            line[l++] = *q == '\t' ? ' ' : *q;
        }
        line[l] = '\0';
        p = next;
        if (strcmp(line, prev) == 0) continue; /* libpq's second try (sslmode=prefer) */
        snprintf(prev, sizeof prev, "%s", line);
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", o ? " " : "", line);
        if (o >= sizeof buf) {
            o = sizeof buf - 1;
            break;
        }
    }
    buf[o] = '\0';
    snprintf(errstr, errstr_size, "%s%s%s%s%s",
             fatal ? "PostgreSQL refused the connection (check DATABASE_URL): "
                   : "cannot connect to PostgreSQL: ",
             buf, state ? " (SQLSTATE " : "", state ? state : "", state ? ")" : "");
}

