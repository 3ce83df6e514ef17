/*
 * log: structured logging, one JSON object per line on stderr
 * ({"time":…,"level":…,"msg":…, field…}).
 *
 * Fields are passed as typed triples built by the LF_* macros and closed by LF_END:
 *   log_write(LOG_INFO, "partition assigned", LF_S("topic", t), LF_I("partition", p), LF_END);
 * Strings are JSON-escaped here; callers never build JSON by hand.
 */
#ifndef MW_LOG_H
#define MW_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

#define LF_S(k, v) (k), 's', (const char *)(v)
#define LF_I(k, v) (k), 'i', (long long)(v)
#define LF_F(k, v) (k), 'f', (double)(v)
#define LF_END ((const char *)0)

/* Parses "debug", "info", "warn"/"warning", "error"; returns -1 when unknown. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level lvl);

/* Sets the minimum level written (default LOG_INFO). Called once at start. */
void log_set_level(enum log_level lvl);
bool log_enabled(enum log_level lvl);

void log_write(enum log_level lvl, const char *msg, ...);

/* Registers a secret (a password, a SASL secret) that no log line may show: every
 * occurrence in a message or a string field is written as "[redacted]". Called at start,
 * before any thread exists; secrets shorter than LOG_SECRET_MIN bytes are not registered
 * (scrubbing one or two characters would mangle every line). At most LOG_MAX_SECRETS. */
#define LOG_SECRET_MIN 3
#define LOG_MAX_SECRETS 16
void log_add_secret(const char *secret);

/* Copies s into out (out_size > 0) with every registered secret replaced; for text that
 * leaves the process by another way than log_write (stderr messages, HTTP). */
void log_scrub(const char *s, char *out, size_t out_size);

#endif
