/* config: declarative settings table, environment + flags; see config.h. */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"

/* S_KAFKA_ID: a string Kafka accepts as an identifier (group.instance.id): 1-249 of
 * [A-Za-z0-9._-], as the Java client checks it. Checked here so that a bad one stops the
 * worker at start with the setting's name, not later in the group protocol. */
enum stype { S_STR, S_INT, S_LEVEL, S_KAFKA_ID };

typedef struct setting {
    const char *env;
    const char *flag;
    enum stype type;
    size_t offset;
    const char *def; /* NULL: unset */
    int min, max;    /* S_INT bounds */
    const char *help;
} setting;

#define OFF(f) offsetof(mw_config, f)

static const setting settings[] = {
    {"KAFKA_BROKERS", "--kafka-brokers", S_STR, OFF(kafka_brokers), "localhost:9092", 0, 0,
     "Kafka bootstrap servers, host:port[,host:port…]"},
    {"KAFKA_GROUP_ID", "--kafka-group-id", S_STR, OFF(group_id), "customer-metadata-ingest", 0, 0,
     "consumer group"},
    {"KAFKA_GROUP_INSTANCE_ID", "--kafka-group-instance-id", S_KAFKA_ID, OFF(group_instance_id),
     NULL, 0, 0,
     "static membership: this worker's stable name in the group, unique per worker (e.g. the "
     "pod name); unset: dynamic membership"},
    {"KAFKA_INPUT_TOPIC", "--kafka-input-topic", S_STR, OFF(input_topic),
     "customer-metadata.batches", 0, 0, "topic of batch messages"},
    {"KAFKA_RESULTS_TOPIC", "--kafka-results-topic", S_STR, OFF(results_topic),
     "customer-metadata.results", 0, 0, "topic of per-item results"},
    {"KAFKA_DLQ_TOPIC", "--kafka-dlq-topic", S_STR, OFF(dlq_topic), "customer-metadata.dlq", 0, 0,
     "dead-letter topic for messages that are not a batch"},
    {"DATABASE_URL", "--database-url", S_STR, OFF(database_url), NULL, 0, 0,
     "libpq conninfo or URI (unset: libpq's PG* variables)"},
    {"KAFKA_CONFIG_FILE", "--kafka-config-file", S_STR, OFF(kafka_config_file), NULL, 0, 0,
     "file of librdkafka properties, name=value a line (kcat's -F), e.g. SASL credentials "
     "from a secret; -X wins over it"},
    {"METRICS_ADDR", "--metrics-addr", S_STR, OFF(metrics_addr), NULL, 0, 0,
     "host:port of /metrics, /healthz, /readyz (unset: off)"},
    {"LOG_LEVEL", "--log-level", S_LEVEL, OFF(log_level), "info", 0, 0,
     "debug, info, warn or error"},
    {"MAX_BATCH_ITEMS", "--max-batch-items", S_INT, OFF(max_batch_items), "10000", 1, 1000000,
     "most items one message may hold"},
    {"TXN_MAX_ITEMS", "--txn-max-items", S_INT, OFF(txn_max_items), "5000", 1, 1000000,
     "items gathered into one database transaction"},
    {"TXN_BACKLOG_ITEMS", "--txn-backlog-items", S_INT, OFF(txn_backlog_items), "8000", 1,
     1000000, "items one transaction may gather while the worker is behind (repeated keys merge)"},
    {"TXN_MAX_WAIT_MS", "--txn-max-wait-ms", S_INT, OFF(txn_max_wait_ms), "50", 0, 60000,
     "longest wait for a transaction to fill"},
    {"SHUTDOWN_TIMEOUT_MS", "--shutdown-timeout-ms", S_INT, OFF(shutdown_timeout_ms), "20000", 0,
     3600000, "on SIGTERM, longest time spent finishing the batch in hand"},
    {"RETRY_MAX_MS", "--retry-max-ms", S_INT, OFF(retry_max_ms), "5000", 10, 600000,
     "cap of the retry backoff while PostgreSQL or Kafka is unavailable"},
    {"DATABASE_CONNECTIONS", "--database-connections", S_INT, OFF(db_connections), "2", 1, MW_MAX_DB_CONNECTIONS,
     "PostgreSQL connections, each applying the transactions of its share of the partitions"},
    {"HEALTHZ_STALL_MS", "--healthz-stall-ms", S_INT, OFF(healthz_stall_ms), "60000", 1000, 3600000,
     "/healthz answers 503 when the main loop has not turned for this long (/readyz: half)"},
    {"API_ADDR", "--api-addr", S_STR, OFF(api_addr), "127.0.0.1:8080", 0, 0,
     "api: host:port the HTTP API listens on"},
    {"API_KEYS_FILE", "--api-keys-file", S_STR, OFF(api_keys_file), NULL, 0, 0,
     "api: clients, one \"ID sha256:HEX\" a line (required; re-read on SIGHUP)"},
    {"API_MAX_BODY_BYTES", "--api-max-body-bytes", S_INT, OFF(api_max_body_bytes), "1000000", 1,
     64 * 1024 * 1024, "api: largest request body (413 beyond; at most what the input topic takes)"},
    {"API_RATE_LIMIT", "--api-rate-limit", S_INT, OFF(api_rate_limit), "0", 0, 100000000,
     "api: items per second per client (429 beyond; 0: off)"},
    {"API_PRODUCE_TIMEOUT_MS", "--api-produce-timeout-ms", S_INT, OFF(api_produce_timeout_ms),
     "5000", 100, 600000, "api: longest wait for Kafka to confirm a request (503 beyond)"},
    {"API_TLS_CERT", "--api-tls-cert", S_STR, OFF(api_tls_cert), NULL, 0, 0,
     "api: PEM certificate (chain) file; with API_TLS_KEY, serve HTTPS"},
    {"API_TLS_KEY", "--api-tls-key", S_STR, OFF(api_tls_key), NULL, 0, 0,
     "api: PEM private key file of API_TLS_CERT"},
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

static bool kafka_id_ok(const char *v) {
    size_t n = strlen(v);
    return n <= 249 && strcmp(v, ".") != 0 && strcmp(v, "..") != 0 &&
           strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static int set_value(mw_config *c, const setting *s, const char *v, const char *from,
                     char *errstr, size_t errstr_size) {
    char *base = (char *)c;
    if (s->type == S_KAFKA_ID && *v && !kafka_id_ok(v)) {
        snprintf(errstr, errstr_size,
                 "%s (%s): expected 1 to 249 letters, digits, '.', '_' or '-', got \"%s\"",
                 s->env, from, v);
        return CONFIG_ERR;
    }
    switch (s->type) {
    case S_STR:
    case S_KAFKA_ID: {
        char **dst = (char **)(base + s->offset);
        if (*v == '\0') {
            snprintf(errstr, errstr_size, "%s (%s): must not be empty", s->env, from);
            return CONFIG_ERR;
        }
        char *dup = strdup(v);
        if (!dup) {
            snprintf(errstr, errstr_size, "out of memory");
            return CONFIG_ERR;
        }
        free(*dst);
        *dst = dup;
        return CONFIG_OK;
    }
    case S_INT: {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < s->min || x > s->max) {
            snprintf(errstr, errstr_size, "%s (%s): expected a whole number from %d to %d, got \"%s\"",
                     s->env, from, s->min, s->max, v);
            return CONFIG_ERR;
        }
        *(int *)(base + s->offset) = (int)x;
        return CONFIG_OK;
    }
    case S_LEVEL: {
        int l = log_level_parse(v);
        if (l < 0) {
            snprintf(errstr, errstr_size, "%s (%s): expected debug, info, warn or error, got \"%s\"",
                     s->env, from, v);
            return CONFIG_ERR;
        }
        *(int *)(base + s->offset) = l;
        return CONFIG_OK;
    }
    }
    return CONFIG_ERR;
}

/* Appends name[0..name_len) = value (copied). */
static int push_prop(mw_config *c, const char *name, size_t name_len, const char *value,
                     char *errstr, size_t errstr_size) {
    char **nn = realloc(c->prop_names, (size_t)(c->n_props + 1) * sizeof *nn);
    if (!nn) goto oom;
    c->prop_names = nn;
    char **vv = realloc(c->prop_values, (size_t)(c->n_props + 1) * sizeof *vv);
    if (!vv) goto oom;
    c->prop_values = vv;
    c->prop_names[c->n_props] = strndup(name, name_len);
    c->prop_values[c->n_props] = strdup(value);
    c->n_props++;
    if (!c->prop_names[c->n_props - 1] || !c->prop_values[c->n_props - 1]) goto oom;
    return CONFIG_OK;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return CONFIG_ERR;
}

static int add_prop(mw_config *c, const char *nv, char *errstr, size_t errstr_size) {
    const char *eq = strchr(nv, '=');
    if (!eq || eq == nv) {
        /* The argument itself is not echoed: it may be a secret. */
        snprintf(errstr, errstr_size, "-X: expected name=value");
        return CONFIG_ERR;
    }
    return push_prop(c, nv, (size_t)(eq - nv), eq + 1, errstr, errstr_size);
}

static bool is_blank(char ch) { return ch == ' ' || ch == '\t'; }

int config_add_props_text(mw_config *c, const char *text, const char *origin, char *errstr,
                          size_t errstr_size) {
    int line_no = 0;
    for (const char *line = text; *line;) {
        const char *end = line + strcspn(line, "\n");
        const char *next = *end ? end + 1 : end;
        line_no++;
        while (end > line && end[-1] == '\r') end--;
        const char *p = line;
        while (p < end && is_blank(*p)) p++;
        if (p == end || *p == '#' || *p == '!') {
            line = next;
            continue;
        }
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *name_end = eq;
        while (name_end && name_end > p && is_blank(name_end[-1])) name_end--;
        if (!eq || name_end == p) {
            /* The line is not echoed: it may hold a secret. */
            snprintf(errstr, errstr_size, "%s line %d: expected name=value", origin, line_no);
            return CONFIG_ERR;
        }
        const char *v = eq + 1;
        while (v < end && is_blank(*v)) v++;
        char *value = strndup(v, (size_t)(end - v));
        if (!value) {
            snprintf(errstr, errstr_size, "out of memory");
            return CONFIG_ERR;
        }
        int rc = push_prop(c, p, (size_t)(name_end - p), value, errstr, errstr_size);
        free(value);
        if (rc != CONFIG_OK) return rc;
        line = next;
    }
    return CONFIG_OK;
}

/* Reads KAFKA_CONFIG_FILE and puts its properties before those of -X (which win). */
static int load_props_file(mw_config *c, char *errstr, size_t errstr_size) {
    const char *path = c->kafka_config_file;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "KAFKA_CONFIG_FILE %s: %s", path, strerror(errno));
        return CONFIG_ERR;
    }
    enum { MAX_FILE = 1 << 20 };
    char *text = malloc(MAX_FILE + 1);
    size_t n = text ? fread(text, 1, MAX_FILE + 1, f) : 0;
    bool failed = text && ferror(f);
    fclose(f);
    if (!text || failed || n > MAX_FILE) {
        snprintf(errstr, errstr_size, "KAFKA_CONFIG_FILE %s: %s", path,
                 !text ? "out of memory" : failed ? "read error" : "larger than 1 MiB");
        free(text);
        return CONFIG_ERR;
    }
    text[n] = '\0';
    if (memchr(text, '\0', n)) {
        snprintf(errstr, errstr_size, "KAFKA_CONFIG_FILE %s: not a text file", path);
        free(text);
        return CONFIG_ERR;
    }
    int n_x = c->n_props;
    char **x_names = c->prop_names, **x_values = c->prop_values;
    c->n_props = 0;
    c->prop_names = c->prop_values = NULL;
    char origin[300];
    snprintf(origin, sizeof origin, "KAFKA_CONFIG_FILE %s", path);
    int rc = config_add_props_text(c, text, origin, errstr, errstr_size);
    free(text);
    for (int i = 0; i < n_x; i++) {
        if (rc == CONFIG_OK)
            rc = push_prop(c, x_names[i], strlen(x_names[i]), x_values[i], errstr, errstr_size);
        free(x_names[i]);
        free(x_values[i]);
    }
    free(x_names);
    free(x_values);
    return rc;
}

int config_load(mw_config *c, int argc, char **argv, char *errstr, size_t errstr_size) {
    memset(c, 0, sizeof *c);
    c->args = calloc((size_t)argc + 1, sizeof *c->args);
    if (!c->args) {
        snprintf(errstr, errstr_size, "out of memory");
        return CONFIG_ERR;
    }
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        const char *v = getenv(s->env);
        if (v && *v == '\0') v = NULL; /* an empty variable counts as unset */
        const char *from = v ? "environment" : "default";
        if (!v) v = s->def;
        if (v && set_value(c, s, v, from, errstr, errstr_size) != CONFIG_OK) return CONFIG_ERR;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return CONFIG_HELP;
        if (strncmp(a, "-X", 2) == 0) {
            const char *nv = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!nv) {
                snprintf(errstr, errstr_size, "-X: expected name=value");
                return CONFIG_ERR;
            }
            if (add_prop(c, nv, errstr, errstr_size) != CONFIG_OK) return CONFIG_ERR;
            continue;
        }
        if (strcmp(a, "--") == 0) { /* the rest is positional */
            while (++i < argc) c->args[c->n_args++] = argv[i];
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            c->args[c->n_args++] = argv[i];
            continue;
        }
        const setting *s = NULL;
        size_t flen = strcspn(a, "=");
        for (size_t k = 0; k < N_SETTINGS; k++)
            if (strlen(settings[k].flag) == flen && strncmp(settings[k].flag, a, flen) == 0)
                s = &settings[k];
        if (!s) {
            snprintf(errstr, errstr_size, "unknown option %.*s (see --help)", (int)flen, a);
            return CONFIG_ERR;
        }
        const char *v = a[flen] == '=' ? a + flen + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) {
            snprintf(errstr, errstr_size, "%s: a value is required", s->flag);
            return CONFIG_ERR;
        }
        if (set_value(c, s, v, s->flag, errstr, errstr_size) != CONFIG_OK) return CONFIG_ERR;
    }
    if (c->kafka_config_file) return load_props_file(c, errstr, errstr_size);
    return CONFIG_OK;
}

void config_free(mw_config *c) {
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].type == S_STR || settings[i].type == S_KAFKA_ID)
            free(*(char **)((char *)c + settings[i].offset));
    for (int i = 0; i < c->n_props; i++) {
        free(c->prop_names[i]);
        free(c->prop_values[i]);
    }
    free(c->prop_names);
    free(c->prop_values);
    free(c->args);
    memset(c, 0, sizeof *c);
}

void config_usage(FILE *out) {
    fprintf(out, "Settings (a flag wins over its environment variable):\n");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        fprintf(out, "  %-26s %-23s %s", s->flag, s->env, s->help);
        if (s->def) fprintf(out, " (default: %s)", s->def);
        fputc('\n', out);
    }
    fprintf(out, "  -X name=value                                      any librdkafka property, e.g. "
                 "-X security.protocol=SSL\n");
}
