/*
 * api: `metadata-worker api`, the HTTP API "Add multiple customer metadata"
 * (docs/contract.md §8) on libmicrohttpd, in front of the input topic; and
 * `metadata-worker api-key ID`.
 *
 * Threads: libmicrohttpd's one polling thread reads requests, authenticates, decodes and
 * answers; the caller's thread (api_run) polls librdkafka, so delivery reports resume the
 * suspended connections, and re-reads the keys on SIGHUP; a probe thread asks the brokers
 * for the topic's metadata every 2 s (/readyz).
 */
#ifndef MW_API_H
#define MW_API_H

#include <signal.h>

#include "config.h"

/* Serves until *run is cleared (SIGTERM), then stops accepting, finishes the requests in
 * hand (at most SHUTDOWN_TIMEOUT_MS) and returns 0; 2 on a configuration error (keys file,
 * TLS files: the message names the file and line), 1 on another start-up or fatal error.
 * *reload set (SIGHUP): re-read API_KEYS_FILE and clear it. */
int api_run(const mw_config *cfg, volatile sig_atomic_t *run, volatile sig_atomic_t *reload);

/* Prints a new secret for client `id` and the API_KEYS_FILE line to add. Exit status. */
int api_key_command(const char *id);

#endif
