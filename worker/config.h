/*
 * config: the worker's settings, built once from a declarative table (environment
 * variable, command-line flag, type, default, help line) and immutable afterwards.
 * A flag wins over its environment variable; `-X name=value` passes a librdkafka
 * property through (kcat's convention), and KAFKA_CONFIG_FILE names a file of such
 * properties (kcat's -F), read first so that -X wins over it: secrets such as
 * sasl.password then stay out of the command line (/proc/PID/cmdline, `ps`).
 *
 * Ownership: config_load fills a mw_config that owns all its strings; config_free
 * releases them. Values are never logged (they may hold secrets).
 */
#ifndef MW_CONFIG_H
#define MW_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef struct mw_config {
    char *kafka_brokers;
    char *group_id;
    char *group_instance_id; /* NULL: dynamic membership (group.instance.id unset) */
    char *input_topic;
    char *results_topic;
    char *dlq_topic;
    char *database_url;     /* NULL: libpq's PG* variables apply */
    char *metrics_addr;     /* NULL: no HTTP endpoint */
    char *kafka_config_file; /* NULL: none; else its properties come before the -X ones */
    int log_level;
    int max_batch_items;    /* items per message (docs/contract.md §2) */
    int txn_max_items;      /* items gathered into one database transaction */
    int txn_backlog_items;  /* the same while behind (the previous transaction was full) */
    int txn_max_wait_ms;    /* how long a transaction waits to fill */
    int shutdown_timeout_ms;
    int retry_max_ms;       /* cap of the retry backoff */
    int db_connections;     /* lanes: partition p is applied on connection p % db_connections */
#define MW_MAX_DB_CONNECTIONS 8 /* the most DATABASE_CONNECTIONS may be (one lane each) */
    int healthz_stall_ms;   /* /healthz fails when the main loop has not turned for this long */
    /* metadata-worker api (docs/contract.md §8) */
    char *api_addr;
    char *api_keys_file;    /* NULL: `api` refuses to start (no unauthenticated mode) */
    int api_max_body_bytes;
    int api_rate_limit;     /* items per second per client; 0: off */
    int api_produce_timeout_ms;
    char *api_tls_cert;     /* both set: HTTPS */
    char *api_tls_key;
    int n_props;            /* KAFKA_CONFIG_FILE's, then -X's name=value pairs, in order */
    char **prop_names;
    char **prop_values;
    int n_args;             /* positional arguments left (e.g. validate's FILE) */
    char **args;
} mw_config;

enum { CONFIG_OK = 0, CONFIG_HELP = 1, CONFIG_ERR = -1 };

/* Parses argv[0..argc) (the arguments after the subcommand) over the environment.
 * Returns CONFIG_OK, CONFIG_HELP (--help seen), or CONFIG_ERR with errstr naming the
 * setting. */
int config_load(mw_config *c, int argc, char **argv, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

void config_free(mw_config *c);

/* Appends the properties of `text`, a properties file's content: one name=value a line
 * (spaces around the name and before the value ignored), blank lines and lines starting with
 * '#' or '!' skipped. `origin` names the file in errors ("FILE line N: …"); values are never
 * echoed. Returns CONFIG_OK or CONFIG_ERR. */
int config_add_props_text(mw_config *c, const char *text, const char *origin, char *errstr,
                          size_t errstr_size) __attribute__((warn_unused_result));

/* Prints the settings table (flags, variables, defaults, help; never current values). */
void config_usage(FILE *out);

#endif
