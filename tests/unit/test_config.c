/*
 * Unit tests of worker/config: defaults, environment variables, flags over the environment
 * (--name value and --name=value), -X name=value pass-through and KAFKA_CONFIG_FILE,
 * positional arguments, errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../worker/config.h"
#include "../../common/log.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char *const all_env[] = {
    "KAFKA_BROKERS", "KAFKA_GROUP_ID", "KAFKA_GROUP_INSTANCE_ID", "KAFKA_INPUT_TOPIC", "KAFKA_RESULTS_TOPIC",
    "KAFKA_DLQ_TOPIC", "DATABASE_URL", "METRICS_ADDR", "LOG_LEVEL", "MAX_BATCH_ITEMS",
    "TXN_MAX_ITEMS", "TXN_BACKLOG_ITEMS", "TXN_MAX_WAIT_MS", "SHUTDOWN_TIMEOUT_MS", "RETRY_MAX_MS",
    "DATABASE_CONNECTIONS", "HEALTHZ_STALL_MS", "API_ADDR", "API_KEYS_FILE",
    "API_MAX_BODY_BYTES", "API_RATE_LIMIT", "API_PRODUCE_TIMEOUT_MS", "API_TLS_CERT", "API_TLS_KEY",
    "KAFKA_CONFIG_FILE",
};

/* Two empty properties files (created by main): KAFKA_CONFIG_FILE's values in the settings
 * table, which the generic tests set from the environment and flags. */
#define EMPTY_PROPS_A "/tmp/mw-test-config-a.properties"
#define EMPTY_PROPS_B "/tmp/mw-test-config-b.properties"

/* Every test starts (and ends) with none of the settings in the environment. */
static int clear_env(void **state) {
    (void)state;
    for (size_t i = 0; i < N(all_env); i++) unsetenv(all_env[i]);
    return 0;
}

/* Loads argv (NULL-terminated list) into *c; returns the config_load status. */
static int load(mw_config *c, char *err, size_t errsz, char **argv) {
    int argc = 0;
    while (argv[argc]) argc++;
    err[0] = '\0';
    return config_load(c, argc, argv, err, errsz);
}

#define ARGV(...) ((char *[]){__VA_ARGS__, NULL})
#define NOARGS ((char *[]){NULL})

/* ---- the settings table -------------------------------------------------------------- */

enum kind { STR, INT };

typedef struct setting_row {
    const char *env, *flag;
    enum kind kind;
    size_t off;
    const char *def;     /* STR default (NULL: unset) */
    int idef;            /* INT default */
    const char *val;     /* a valid non-default value */
    int ival;
    const char *other;   /* another valid value (the variable a flag overrides) */
} setting_row;

#define OFF(f) offsetof(mw_config, f)

static const setting_row settings[] = {
    {"KAFKA_BROKERS", "--kafka-brokers", STR, OFF(kafka_brokers), "localhost:9092", 0,
     "k1:9092,k2:9092", 0, "env:9092"},
    {"KAFKA_GROUP_ID", "--kafka-group-id", STR, OFF(group_id), "customer-metadata-ingest", 0,
     "grp", 0, "env-grp"},
    {"KAFKA_GROUP_INSTANCE_ID", "--kafka-group-instance-id", STR, OFF(group_instance_id), NULL,
     0, "metadata-worker-0", 0, "Pod_1.a"},
    {"KAFKA_INPUT_TOPIC", "--kafka-input-topic", STR, OFF(input_topic),
     "customer-metadata.batches", 0, "in", 0, "env-in"},
    {"KAFKA_RESULTS_TOPIC", "--kafka-results-topic", STR, OFF(results_topic),
     "customer-metadata.results", 0, "out", 0, "env-out"},
    {"KAFKA_DLQ_TOPIC", "--kafka-dlq-topic", STR, OFF(dlq_topic), "customer-metadata.dlq", 0,
     "dead", 0, "env-dead"},
    {"DATABASE_URL", "--database-url", STR, OFF(database_url), NULL, 0,
     "postgresql://u:p@db:5432/x?sslmode=require", 0, "host=env"},
    {"KAFKA_CONFIG_FILE", "--kafka-config-file", STR, OFF(kafka_config_file), NULL, 0,
     EMPTY_PROPS_A, 0, EMPTY_PROPS_B},
    {"METRICS_ADDR", "--metrics-addr", STR, OFF(metrics_addr), NULL, 0,
     "0.0.0.0:9100", 0, "127.0.0.1:1"},
    {"LOG_LEVEL", "--log-level", INT, OFF(log_level), NULL, LOG_INFO,
     "debug", LOG_DEBUG, "error"},
    {"MAX_BATCH_ITEMS", "--max-batch-items", INT, OFF(max_batch_items), NULL, 10000,
     "77", 77, "42"},
    {"TXN_MAX_ITEMS", "--txn-max-items", INT, OFF(txn_max_items), NULL, 5000,
     "123", 123, "42"},
    {"TXN_BACKLOG_ITEMS", "--txn-backlog-items", INT, OFF(txn_backlog_items), NULL, 8000,
     "40000", 40000, "42"},
    {"TXN_MAX_WAIT_MS", "--txn-max-wait-ms", INT, OFF(txn_max_wait_ms), NULL, 50,
     "0", 0, "42"},
    {"SHUTDOWN_TIMEOUT_MS", "--shutdown-timeout-ms", INT, OFF(shutdown_timeout_ms), NULL, 20000,
     "1500", 1500, "42"},
    {"RETRY_MAX_MS", "--retry-max-ms", INT, OFF(retry_max_ms), NULL, 5000,
     "60000", 60000, "42"},
    {"DATABASE_CONNECTIONS", "--database-connections", INT, OFF(db_connections), NULL, 2,
     "3", 3, "5"},
    {"HEALTHZ_STALL_MS", "--healthz-stall-ms", INT, OFF(healthz_stall_ms), NULL, 60000,
     "1000", 1000, "42000"},
    {"API_ADDR", "--api-addr", STR, OFF(api_addr), "127.0.0.1:8080", 0,
     "0.0.0.0:443", 0, "127.0.0.1:1"},
    {"API_KEYS_FILE", "--api-keys-file", STR, OFF(api_keys_file), NULL, 0,
     "/etc/mw/keys", 0, "env.keys"},
    {"API_MAX_BODY_BYTES", "--api-max-body-bytes", INT, OFF(api_max_body_bytes), NULL, 1000000,
     "2000", 2000, "42"},
    {"API_RATE_LIMIT", "--api-rate-limit", INT, OFF(api_rate_limit), NULL, 0,
     "500", 500, "42"},
    {"API_PRODUCE_TIMEOUT_MS", "--api-produce-timeout-ms", INT, OFF(api_produce_timeout_ms),
     NULL, 5000, "1500", 1500, "420"},
    {"API_TLS_CERT", "--api-tls-cert", STR, OFF(api_tls_cert), NULL, 0,
     "/etc/mw/cert.pem", 0, "env.pem"},
    {"API_TLS_KEY", "--api-tls-key", STR, OFF(api_tls_key), NULL, 0,
     "/etc/mw/key.pem", 0, "env.key"},
};

static const char *get_str(const mw_config *c, const setting_row *s) {
    return *(char *const *)((const char *)c + s->off);
}

static int get_int(const mw_config *c, const setting_row *s) {
    return *(const int *)((const char *)c + s->off);
}

/* Checks that setting s holds its default (want_default) or its test value. */
static void expect_setting(const mw_config *c, const setting_row *s, bool want_default,
                           const char *how) {
    if (s->kind == STR) {
        const char *want = want_default ? s->def : s->val, *got = get_str(c, s);
        if (want == NULL ? got != NULL : (got == NULL || strcmp(got, want) != 0)) {
            print_error("%s (%s): got \"%s\", expected \"%s\"\n", s->env, how,
                        got ? got : "(null)", want ? want : "(null)");
            fail();
        }
    } else {
        int want = want_default ? s->idef : s->ival, got = get_int(c, s);
        if (got != want) {
            print_error("%s (%s): got %d, expected %d\n", s->env, how, got, want);
            fail();
        }
    }
}

static void test_defaults(void **state) {
    (void)state;
    mw_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, NOARGS), CONFIG_OK);
    for (size_t i = 0; i < N(settings); i++) expect_setting(&c, &settings[i], true, "default");
    assert_int_equal(c.n_props, 0);
    assert_int_equal(c.n_args, 0);
    config_free(&c);
}

/* Each variable alone sets its setting and leaves the others at their defaults. */
static void test_env(void **state) {
    (void)state;
    for (size_t i = 0; i < N(settings); i++) {
        clear_env(NULL);
        setenv(settings[i].env, settings[i].val, 1);
        mw_config c;
        char err[256];
        int rc = load(&c, err, sizeof err, NOARGS);
        if (rc != CONFIG_OK) {
            print_error("%s=%s: config_load %d: %s\n", settings[i].env, settings[i].val, rc, err);
            fail();
        }
        for (size_t k = 0; k < N(settings); k++)
            expect_setting(&c, &settings[k], k != i, "environment");
        config_free(&c);
    }
    clear_env(NULL);
}

/* An empty variable counts as unset. */
static void test_env_empty_is_unset(void **state) {
    (void)state;
    for (size_t i = 0; i < N(settings); i++) setenv(settings[i].env, "", 1);
    mw_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, NOARGS), CONFIG_OK);
    for (size_t i = 0; i < N(settings); i++) expect_setting(&c, &settings[i], true, "empty env");
    config_free(&c);
}

/* A flag, in both forms, wins over its variable (set to a different valid value). */
static void test_flag_over_env(void **state) {
    (void)state;
    for (size_t i = 0; i < N(settings); i++) {
        const setting_row *s = &settings[i];
        for (int form = 0; form < 3; form++) {
            clear_env(NULL);
            /* form 2: no variable at all. */
            if (form < 2) setenv(s->env, s->other, 1);
            mw_config c;
            char err[256], joined[256];
            int rc;
            if (form == 1) {
                snprintf(joined, sizeof joined, "%s=%s", s->flag, s->val);
                rc = load(&c, err, sizeof err, ARGV(joined));
            } else {
                rc = load(&c, err, sizeof err, ARGV((char *)s->flag, (char *)s->val));
            }
            if (rc != CONFIG_OK) {
                print_error("%s form %d: config_load %d: %s\n", s->flag, form, rc, err);
                fail();
            }
            expect_setting(&c, s, false, form == 1 ? "--flag=value" : "--flag value");
            config_free(&c);
        }
    }
    clear_env(NULL);
}

/* The last of a repeated flag wins. */
static void test_flag_repeated(void **state) {
    (void)state;
    mw_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err,
                          ARGV("--kafka-brokers", "a:1", "--kafka-brokers=b:2",
                               "--max-batch-items", "5", "--max-batch-items=6")),
                     CONFIG_OK);
    assert_string_equal(c.kafka_brokers, "b:2");
    assert_int_equal(c.max_batch_items, 6);
    config_free(&c);
}

static void test_log_levels(void **state) {
    (void)state;
    static const struct {
        const char *v;
        int want;
    } rows[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN},
                {"warning", LOG_WARN}, {"error", LOG_ERROR}};
    for (size_t i = 0; i < N(rows); i++) {
        mw_config c;
        char err[256];
        assert_int_equal(load(&c, err, sizeof err, ARGV("--log-level", (char *)rows[i].v)),
                         CONFIG_OK);
        assert_int_equal(c.log_level, rows[i].want);
        config_free(&c);
    }
}

/* ---- -X name=value ------------------------------------------------------------------- */

static void test_props_in_order(void **state) {
    (void)state;
    mw_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err,
                          ARGV("-X", "security.protocol=SASL_SSL", "-Xsasl.mechanisms=PLAIN",
                               "--kafka-brokers", "b:1", "-X", "sasl.password=p=q",
                               "-X", "empty.value=", "-X", "security.protocol=SSL")),
                     CONFIG_OK);
    static const char *const names[] = {"security.protocol", "sasl.mechanisms", "sasl.password",
                                        "empty.value", "security.protocol"};
    static const char *const values[] = {"SASL_SSL", "PLAIN", "p=q", "", "SSL"};
    assert_int_equal(c.n_props, (int)N(names));
    for (int i = 0; i < c.n_props; i++) {
        assert_string_equal(c.prop_names[i], names[i]);
        assert_string_equal(c.prop_values[i], values[i]);
    }
    assert_string_equal(c.kafka_brokers, "b:1");
    assert_int_equal(c.n_args, 0);
    config_free(&c);
}

static const struct {
    const char *name;
    char *argv[4];
} bad_props[] = {
    {"-X at the end", {"-X", NULL}},
    {"-X without =", {"-X", "s3cr3t", NULL}},
    {"-X with empty name", {"-X", "=s3cr3t", NULL}},
    {"-Xname without =", {"-Xs3cr3t", NULL}},
};

/* A malformed -X is an error that does not echo the argument (it may be a secret). */
static void test_props_errors(void **state) {
    (void)state;
    for (size_t i = 0; i < N(bad_props); i++) {
        mw_config c;
        char err[256];
        int rc = load(&c, err, sizeof err, (char **)bad_props[i].argv);
        if (rc != CONFIG_ERR || strstr(err, "-X") == NULL || strstr(err, "s3cr3t") != NULL) {
            print_error("%s: rc %d, err \"%s\"\n", bad_props[i].name, rc, err);
            fail();
        }
        config_free(&c);
    }
}

/* ---- KAFKA_CONFIG_FILE ---------------------------------------------------------------- */

static char props_path[64];

static void write_props(const char *text) {
    strcpy(props_path, "/tmp/mw-test-props.XXXXXX");
    int fd = mkstemp(props_path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The file's properties come first, in order, then -X's (librdkafka keeps the last value
 * set, so -X wins); comments, blank lines, CRLF and spaces around the name are handled. */
static void test_props_file_then_x(void **state) {
    (void)state;
    write_props("# Kafka over SASL_SSL\r\n"
                "security.protocol = SASL_SSL\r\n"
                "\n"
                "   ! another comment\n"
                "\tsasl.username=worker\n"
                "sasl.password=  p=q # not a comment \n"
                "empty.value=\n"
                "last.line=no newline");
    setenv("KAFKA_CONFIG_FILE", props_path, 1);
    mw_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, ARGV("-X", "security.protocol=SSL")), CONFIG_OK);
    static const char *const names[] = {"security.protocol", "sasl.username", "sasl.password",
                                        "empty.value", "last.line", "security.protocol"};
    static const char *const values[] = {"SASL_SSL", "worker", "p=q # not a comment ", "",
                                         "no newline", "SSL"};
    assert_int_equal(c.n_props, (int)N(names));
    for (int i = 0; i < c.n_props; i++) {
        assert_string_equal(c.prop_names[i], names[i]);
        assert_string_equal(c.prop_values[i], values[i]);
    }
    config_free(&c);
    unlink(props_path);
}

/* A bad file stops the worker with the file and line named, never a value echoed. */
static void test_props_file_errors(void **state) {
    (void)state;
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"security.protocol=SSL\ns3cr3t\n", "line 2: expected name=value"},
        {"=s3cr3t\n", "line 1: expected name=value"},
        {"  = s3cr3t\n", "line 1: expected name=value"},
    };
    for (size_t i = 0; i < N(bad); i++) {
        write_props(bad[i].text);
        setenv("KAFKA_CONFIG_FILE", props_path, 1);
        mw_config c;
        char err[256];
        int rc = load(&c, err, sizeof err, ARGV("-X", "b=s3cr3t"));
        if (rc != CONFIG_ERR || !strstr(err, bad[i].want) || !strstr(err, props_path) ||
            strstr(err, "s3cr3t")) {
            print_error("case %zu: rc %d, err \"%s\"\n", i, rc, err);
            fail();
        }
        config_free(&c);
        unlink(props_path);
    }
    /* Missing, and not text. */
    setenv("KAFKA_CONFIG_FILE", "/nonexistent/kafka.properties", 1);
    mw_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, NOARGS), CONFIG_ERR);
    assert_non_null(strstr(err, "KAFKA_CONFIG_FILE /nonexistent/kafka.properties: No such file"));
    config_free(&c);
    write_props("");
    FILE *f = fopen(props_path, "wb");
    assert_non_null(f);
    fwrite("a=1\0b=2\n", 1, 8, f);
    fclose(f);
    setenv("KAFKA_CONFIG_FILE", props_path, 1);
    assert_int_equal(load(&c, err, sizeof err, NOARGS), CONFIG_ERR);
    assert_non_null(strstr(err, "not a text file"));
    config_free(&c);
    unlink(props_path);
}

/* ---- positional arguments, --help, errors -------------------------------------------- */

static void test_positional(void **state) {
    (void)state;
    mw_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err,
                          ARGV("first.json", "--log-level", "warn", "-", "--kafka-brokers=x:1",
                               "second")),
                     CONFIG_OK);
    static const char *const want[] = {"first.json", "-", "second"};
    assert_int_equal(c.n_args, (int)N(want));
    for (int i = 0; i < c.n_args; i++) assert_string_equal(c.args[i], want[i]);
    assert_int_equal(c.log_level, LOG_WARN);
    assert_string_equal(c.kafka_brokers, "x:1");
    assert_int_equal(c.n_props, 0);
    config_free(&c);
}

/* "--" ends the options: everything after it is positional, even what looks like a flag,
 * -X or --help (`validate -- -file.json` names a file that starts with '-'). */
static void test_double_dash_ends_options(void **state) {
    (void)state;
    mw_config c;
    char err[256];
    int rc = load(&c, err, sizeof err,
                  ARGV("--log-level", "warn", "file", "--", "--not-a-flag", "-X", "--help"));
    static const char *const want[] = {"file", "--not-a-flag", "-X", "--help"};
    bool args_ok = rc == CONFIG_OK && c.n_args == (int)N(want) && c.n_props == 0 &&
                   c.log_level == LOG_WARN;
    for (int i = 0; args_ok && i < c.n_args; i++) args_ok = strcmp(c.args[i], want[i]) == 0;
    config_free(&c); /* before asserting: a failure must not also report a leak */
    if (rc != CONFIG_OK) print_error("config_load: %d \"%s\"\n", rc, err);
    assert_int_equal(rc, CONFIG_OK);
    assert_true(args_ok);
}

static void test_help(void **state) {
    (void)state;
    char *const *const rows[] = {
        (char *[]){"--help", NULL},
        (char *[]){"-h", NULL},
        (char *[]){"--kafka-brokers", "x:1", "file", "--help", NULL},
    };
    for (size_t i = 0; i < N(rows); i++) {
        mw_config c;
        char err[256];
        assert_int_equal(load(&c, err, sizeof err, (char **)rows[i]), CONFIG_HELP);
        config_free(&c);
    }
}

static const struct {
    const char *name;
    const char *env, *env_value; /* a variable to set first, or NULL */
    char *argv[4];
    const char *must_name;       /* errstr must contain this */
} errors[] = {
    {"unknown option", NULL, NULL, {"--bogus", NULL}, "--bogus"},
    {"unknown option with =", NULL, NULL, {"--bogus=1", NULL}, "--bogus"},
    {"unknown option after a good one", NULL, NULL, {"--log-level", "info", "--nope", NULL},
     "--nope"},
    {"flag without value", NULL, NULL, {"--kafka-brokers", NULL}, "--kafka-brokers"},
    {"empty string flag", NULL, NULL, {"--kafka-brokers=", NULL}, "KAFKA_BROKERS"},
    {"bad integer env", "MAX_BATCH_ITEMS", "abc", {NULL}, "MAX_BATCH_ITEMS"},
    {"integer env with suffix", "MAX_BATCH_ITEMS", "10x", {NULL}, "MAX_BATCH_ITEMS"},
    {"integer env below min", "MAX_BATCH_ITEMS", "0", {NULL}, "MAX_BATCH_ITEMS"},
    {"integer env above max", "MAX_BATCH_ITEMS", "1000001", {NULL}, "MAX_BATCH_ITEMS"},
    {"integer env overflow", "MAX_BATCH_ITEMS", "99999999999999999999", {NULL},
     "MAX_BATCH_ITEMS"},
    {"negative integer env", "TXN_MAX_WAIT_MS", "-1", {NULL}, "TXN_MAX_WAIT_MS"},
    {"bad integer flag", NULL, NULL, {"--max-batch-items", "many", NULL}, "MAX_BATCH_ITEMS"},
    {"empty integer flag", NULL, NULL, {"--max-batch-items=", NULL}, "MAX_BATCH_ITEMS"},
    {"float integer flag", NULL, NULL, {"--txn-max-items=1.5", NULL}, "TXN_MAX_ITEMS"},
    {"retry below min", NULL, NULL, {"--retry-max-ms=9", NULL}, "RETRY_MAX_MS"},
    {"connections below min", NULL, NULL, {"--database-connections=0", NULL},
     "DATABASE_CONNECTIONS"},
    {"connections above max", NULL, NULL, {"--database-connections=9", NULL},
     "DATABASE_CONNECTIONS"},
    {"connections env above max", "DATABASE_CONNECTIONS", "9", {NULL}, "DATABASE_CONNECTIONS"},
    {"negative connections env", "DATABASE_CONNECTIONS", "-2", {NULL}, "DATABASE_CONNECTIONS"},
    {"bad log level env", "LOG_LEVEL", "loud", {NULL}, "LOG_LEVEL"},
    {"bad log level flag", NULL, NULL, {"--log-level=verbose", NULL}, "LOG_LEVEL"},
    {"instance id with a space", NULL, NULL, {"--kafka-group-instance-id=pod 0", NULL},
     "KAFKA_GROUP_INSTANCE_ID"},
    {"instance id with a slash env", "KAFKA_GROUP_INSTANCE_ID", "ns/pod-0", {NULL},
     "KAFKA_GROUP_INSTANCE_ID"},
    {"instance id \"..\"", NULL, NULL, {"--kafka-group-instance-id", "..", NULL},
     "KAFKA_GROUP_INSTANCE_ID"},
    {"instance id of 250 characters", NULL, NULL,
     {"--kafka-group-instance-id="
      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL},
     "KAFKA_GROUP_INSTANCE_ID"},
    {"empty instance id flag", NULL, NULL, {"--kafka-group-instance-id=", NULL},
     "KAFKA_GROUP_INSTANCE_ID"},
    {"bad flag over good env", "MAX_BATCH_ITEMS", "5", {"--max-batch-items=x", NULL},
     "MAX_BATCH_ITEMS"},
};

static void test_errors(void **state) {
    (void)state;
    for (size_t i = 0; i < N(errors); i++) {
        clear_env(NULL);
        if (errors[i].env) setenv(errors[i].env, errors[i].env_value, 1);
        mw_config c;
        char err[256];
        int rc = load(&c, err, sizeof err, (char **)errors[i].argv);
        if (rc != CONFIG_ERR || strstr(err, errors[i].must_name) == NULL) {
            print_error("%s: rc %d, err \"%s\" (expected CONFIG_ERR naming %s)\n",
                        errors[i].name, rc, err, errors[i].must_name);
            fail();
        }
        config_free(&c); /* what main does after an error: must be safe */
    }
    clear_env(NULL);
}

/* Integer bounds are inclusive. */
static void test_int_bounds(void **state) {
    (void)state;
    mw_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err,
                          ARGV("--max-batch-items=1", "--txn-max-items=1000000",
                               "--txn-max-wait-ms=60000", "--retry-max-ms=10",
                               "--database-connections=1")),
                     CONFIG_OK);
    assert_int_equal(c.max_batch_items, 1);
    assert_int_equal(c.txn_max_items, 1000000);
    assert_int_equal(c.txn_max_wait_ms, 60000);
    assert_int_equal(c.retry_max_ms, 10);
    assert_int_equal(c.db_connections, 1);
    config_free(&c);
    assert_int_equal(load(&c, err, sizeof err,
                          ARGV("--max-batch-items=1000000", "--database-connections=8")),
                     CONFIG_OK);
    assert_int_equal(c.max_batch_items, 1000000);
    assert_int_equal(c.db_connections, 8);
    config_free(&c);
}

/* KAFKA_GROUP_INSTANCE_ID takes what Kafka takes: 1-249 of [A-Za-z0-9._-] (the errors above
 * are the rest). */
static void test_instance_id_bounds(void **state) {
    (void)state;
    char longest[249 + 1];
    memset(longest, 'x', 249);
    longest[249] = '\0';
    static const char *const good[] = {"a", "-", "...", "AZaz09._-", "metadata-worker-0"};
    for (size_t i = 0; i <= N(good); i++) {
        const char *v = i < N(good) ? good[i] : longest;
        mw_config c;
        char err[256];
        int rc = load(&c, err, sizeof err, ARGV("--kafka-group-instance-id", (char *)v));
        bool ok = rc == CONFIG_OK && c.group_instance_id && strcmp(c.group_instance_id, v) == 0;
        config_free(&c);
        if (!ok) {
            print_error("\"%s\": config_load %d \"%s\"\n", v, rc, err);
            fail();
        }
    }
}

/* config_usage's text (caller frees). */
static char *usage_text(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_usage(f);
    fclose(f);
    return text;
}

/* The usage lists every flag and variable but never a current value (they may be secrets). */
static void test_usage(void **state) {
    (void)state;
    setenv("DATABASE_URL", "postgresql://u:hunter2@db/x", 1);
    char *text = usage_text();
    for (size_t i = 0; i < N(settings); i++) {
        assert_non_null(strstr(text, settings[i].env));
        assert_non_null(strstr(text, settings[i].flag));
    }
    assert_non_null(strstr(text, "-X"));
    assert_null(strstr(text, "hunter2"));
    free(text);
}

/* The table above covers every setting: each variable the usage lists (one line per
 * setting, "  --flag  VARIABLE  help") has its row here. */
static void test_table_covers_every_setting(void **state) {
    (void)state;
    char *text = usage_text();
    int listed = 0, missing = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char flag[64], env[64];
        if (strncmp(line, "  --", 4) != 0 || sscanf(line, " %63s %63s", flag, env) != 2) continue;
        listed++;
        size_t i = 0;
        while (i < N(settings) && strcmp(settings[i].env, env) != 0) i++;
        if (i == N(settings)) {
            print_error("%s (%s) is a setting of worker/config.c with no row in test_config.c's "
                        "settings table\n", env, flag);
            missing++;
        }
    }
    free(text);
    assert_int_equal(missing, 0);
    assert_int_equal(listed, (int)N(settings));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_env, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_env_empty_is_unset, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_flag_over_env, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_flag_repeated, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_log_levels, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_props_in_order, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_props_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_props_file_then_x, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_props_file_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_positional, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_double_dash_ends_options, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_help, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_int_bounds, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_instance_id_bounds, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_usage, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_table_covers_every_setting, clear_env, clear_env),
    };
    for (size_t i = 0; i < 2; i++) {
        FILE *f = fopen(i ? EMPTY_PROPS_B : EMPTY_PROPS_A, "w");
        if (!f) return 1;
        fclose(f);
    }
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(EMPTY_PROPS_A);
    unlink(EMPTY_PROPS_B);
    return failed;
}
