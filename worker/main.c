/*
 * metadata-worker: ingests customer-metadata batches from Kafka into PostgreSQL.
 *   metadata-worker [run]        consume, validate, upsert, publish results (default)
 *   metadata-worker migrate      apply schemas/ to the database and exit
 *   metadata-worker validate F   print the API response for one batch message (F or -)
 *   metadata-worker api          serve the HTTP API in front of the input topic (§8)
 *   metadata-worker api-key ID   print a new secret for client ID and its API_KEYS_FILE line
 * See README.md and docs/contract.md §1.
 */
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "config.h"
#include "../common/jsonw.h"
#include "../common/log.h"
#include "batch.h"
#include "db.h"
#include "ingest.h"
#include "result.h"

#ifndef MW_VERSION
#define MW_VERSION "dev"
#endif

/* The only mutable globals, the signal flags: run cleared by SIGTERM/SIGINT, reload set by
 * SIGHUP (`api` re-reads API_KEYS_FILE). */
static volatile sig_atomic_t run = 1;
static volatile sig_atomic_t reload = 0;

static void on_signal(int sig) {
    if (sig == SIGHUP) reload = 1;
    else run = 0;
}

static void usage(FILE *out, const char *cmd) {
    if (!cmd || strcmp(cmd, "run") == 0) {
        fprintf(out,
                "Usage: metadata-worker [run] [options] [-X name=value …]\n"
                "Consumes batch messages, validates every item, upserts the valid ones into\n"
                "PostgreSQL and publishes one result message per item. Stops cleanly on\n"
                "SIGTERM or SIGINT.\n\n"
                "Other commands: metadata-worker migrate | validate FILE|- | api | api-key ID\n"
                "(each takes --help)\n\n");
    } else if (strcmp(cmd, "migrate") == 0) {
        fprintf(out, "Usage: metadata-worker migrate [options]\n"
                     "Applies the schema (tables and functions) to DATABASE_URL and exits.\n"
                     "Idempotent; safe to run from several hosts at once.\n\n");
    } else if (strcmp(cmd, "api") == 0) {
        fprintf(out, "Usage: metadata-worker api [options]\n"
                     "Serves POST /metadata-ingestion/v1/many-customer-metadata on API_ADDR and\n"
                     "appends each accepted request body to KAFKA_INPUT_TOPIC, answering once\n"
                     "Kafka confirmed it (docs/contract.md §8). SIGHUP re-reads API_KEYS_FILE;\n"
                     "SIGTERM stops accepting and finishes the requests in hand.\n\n");
    } else if (strcmp(cmd, "api-key") == 0) {
        fprintf(out, "Usage: metadata-worker api-key ID\n"
                     "Prints a new random secret for client ID (shown once, stored nowhere) and\n"
                     "the line \"ID sha256:HEX\" to add to API_KEYS_FILE.\n\n");
        return;
    } else {
        fprintf(out, "Usage: metadata-worker validate [options] FILE|-\n"
                     "Reads one batch message from FILE (or standard input with -) and prints\n"
                     "the response the API would give: {\"errorCount\": N, \"results\": […]}.\n"
                     "Touches nothing. Exit status 0 for a batch (whether or not items failed),\n"
                     "1 when the input is not a batch at all, 2 on a usage error.\n\n");
    }
    config_usage(out);
}

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) { free(buf); return NULL; }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) { free(buf); return NULL; }
    *len = n;
    return buf;
}

static int cmd_validate(const mw_config *cfg) {
    if (cfg->n_args != 1) {
        fprintf(stderr, "metadata-worker validate: expected one FILE (or - for standard input)\n");
        return 2;
    }
    const char *path = cfg->args[0];
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "metadata-worker validate: %s: %s\n", path, strerror(errno));
        return 2;
    }
    size_t len = 0;
    char *buf = read_all(f, &len);
    if (f != stdin) fclose(f);
    if (!buf) {
        fprintf(stderr, "metadata-worker validate: %s: cannot read\n", path);
        return 2;
    }
    mw_source src = {cfg->input_topic, 0, 0};
    mw_batch b;
    int rc = 2;
    if (batch_decode(&b, buf, len, &src, cfg->max_batch_items) == 0) {
        jsonw w;
        jsonw_init(&w);
        result_response(&w, &b);
        if (!w.oom) {
            fwrite(w.buf, 1, w.len, stdout);
            fputc('\n', stdout);
            rc = b.bad_request ? 1 : 0;
        }
        jsonw_free(&w);
        batch_free(&b);
    } else {
        fprintf(stderr, "metadata-worker validate: out of memory\n");
    }
    free(buf);
    return rc;
}

static int cmd_migrate(const mw_config *cfg) {
    mw_db *db = db_new(cfg);
    if (!db) return 1;
    char err[1024];
    int applied = 0;
    enum db_status st = DB_TRANSIENT;
    /* PostgreSQL may still be starting (containers): retry for up to a minute. */
    for (int attempt = 0; attempt < 60 && run; attempt++) {
        st = db_migrate(db, &applied, err, sizeof err);
        if (st != DB_TRANSIENT) break;
        log_write(LOG_WARN, "waiting for PostgreSQL", LF_S("error", err), LF_END);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    db_destroy(db);
    if (st != DB_OK) {
        log_write(LOG_ERROR, "migration failed", LF_S("error", err), LF_END);
        return 1;
    }
    log_write(LOG_INFO, "schema up to date", LF_I("migrations_applied", applied), LF_END);
    return 0;
}

int main(int argc, char **argv) {
    const char *cmd = "run";
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        cmd = argv[1];
        first = 2;
    }
    if (strcmp(cmd, "run") && strcmp(cmd, "migrate") && strcmp(cmd, "validate") &&
        strcmp(cmd, "api") && strcmp(cmd, "api-key")) {
        fprintf(stderr, "metadata-worker: unknown command \"%s\" (run, migrate, validate, api, "
                        "api-key; see --help)\n", cmd);
        return 2;
    }
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("metadata-worker %s\n", MW_VERSION);
        return 0;
    }
    mw_config cfg;
    char err[512];
    int c = config_load(&cfg, argc - first, argv + first, err, sizeof err);
    if (c == CONFIG_HELP) {
        usage(stdout, first == 2 ? cmd : NULL);
        config_free(&cfg);
        return 0;
    }
    if (c != CONFIG_OK) {
        fprintf(stderr, "metadata-worker: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    log_set_level((enum log_level)cfg.log_level);
    /* librdkafka's threads would each get a glibc arena that keeps its freed memory; two
     * arenas keep the resident size flat and small (MALLOC_ARENA_MAX still overrides). */
    if (!getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 2);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Secrets no log line may show: -X values that are credentials or keys, the password
     * of DATABASE_URL (or PGPASSWORD). A DATABASE_URL that does not parse is a
     * configuration error: stop now, without quoting it. */
    for (int i = 0; i < cfg.n_props; i++)
        if (strstr(cfg.prop_names[i], "password") || strstr(cfg.prop_names[i], "secret") ||
            strstr(cfg.prop_names[i], ".pem") || strstr(cfg.prop_names[i], "oauthbearer.config") ||
            strstr(cfg.prop_names[i], "jaas"))
            log_add_secret(cfg.prop_values[i]);
    bool uses_db = strcmp(cmd, "run") == 0 || strcmp(cmd, "migrate") == 0;
    if (uses_db && db_conninfo_check(cfg.database_url, err, sizeof err)) {
        log_write(LOG_ERROR, err, LF_END);
        config_free(&cfg);
        return 1;
    }

    int rc;
    if (strcmp(cmd, "validate") == 0) {
        rc = cmd_validate(&cfg);
    } else if (strcmp(cmd, "migrate") == 0) {
        rc = cmd_migrate(&cfg);
    } else if (strcmp(cmd, "api-key") == 0) {
        if (cfg.n_args != 1) {
            fprintf(stderr, "metadata-worker api-key: expected one client ID\n");
            rc = 2;
        } else {
            rc = api_key_command(cfg.args[0]);
        }
    } else if (cfg.n_args) {
        fprintf(stderr, "metadata-worker %s: unexpected argument \"%s\"\n", cmd, cfg.args[0]);
        rc = 2;
    } else if (strcmp(cmd, "api") == 0) {
        rc = api_run(&cfg, &run, &reload);
    } else {
        rc = ingest_run(&cfg, &run);
    }
    config_free(&cfg);
    return rc;
}
