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

#endif
