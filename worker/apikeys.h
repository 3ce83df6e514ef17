/*
 * apikeys: the API's clients (docs/contract.md §8): the API_KEYS_FILE format, lookup of a
 * client by id with a constant-time comparison of its secret's SHA-256, new secrets, and
 * the per-client token bucket of API_RATE_LIMIT. Pure but for apikeys_load (reads a file)
 * and apikeys_new_secret (getrandom); no globals.
 *
 * File format: one client per line, "ID sha256:HEX" (HEX: 64 hex digits, the SHA-256 of
 * the secret's bytes); '#' starts a comment; blank lines are ignored. ID is 1 to
 * APIKEYS_ID_MAX characters of [A-Za-z0-9._-] (it becomes a Kafka key and a log field).
 *
 * Ownership: apikeys_parse/apikeys_load return an mw_apikeys that apikeys_free releases;
 * apikeys_check returns a pointer into it (valid until it is freed).
 */
#ifndef MW_APIKEYS_H
#define MW_APIKEYS_H

#include <stddef.h>
#include <stdint.h>

#define APIKEYS_ID_MAX 64
#define APIKEYS_SECRET_BYTES 32
/* base64url without padding of APIKEYS_SECRET_BYTES bytes, plus the NUL. */
#define APIKEYS_SECRET_LEN 44

typedef struct mw_apikeys mw_apikeys;

/* Parses text[0..len); `name` (the file's path) prefixes errors: "NAME:LINE: reason". */
mw_apikeys *apikeys_parse(const char *text, size_t len, const char *name, char *errstr,
                          size_t errstr_size) __attribute__((warn_unused_result));
mw_apikeys *apikeys_load(const char *path, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));
void apikeys_free(mw_apikeys *k);

int apikeys_count(const mw_apikeys *k);

/* The client's id when id is known and SHA-256(secret) matches its hash, else NULL. The
 * work done does not depend on where the secret differs, nor on whether the id exists. */
const char *apikeys_check(const mw_apikeys *k, const char *id, const char *secret,
                          size_t secret_len);

/* Token bucket of `rate` items per second (capacity: one second's worth) of client `id`,
 * at monotonic time now_ms. Returns 0 and takes n tokens, or returns the seconds to wait
 * (>= 1). A batch larger than the capacity is let through once the bucket is full, leaving
 * it in debt, so any batch can pass. rate <= 0: no limit. Unknown id: 0. */
int apikeys_take(mw_apikeys *k, const char *id, int rate, int n, int64_t now_ms);

/* Moves the buckets of `from` to the clients of `to` with the same id (on a reload). */
void apikeys_carry_buckets(mw_apikeys *to, const mw_apikeys *from);

/* A new secret (APIKEYS_SECRET_BYTES from getrandom(2), base64url) and its file line
 * "ID sha256:HEX" (line_size >= APIKEYS_ID_MAX + 80). Returns 0, or -1 with errstr. */
int apikeys_new_secret(const char *id, char secret[APIKEYS_SECRET_LEN + 1], char *line,
                       size_t line_size, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* 1 when id is a valid client id. */
int apikeys_valid_id(const char *id, size_t len);

#endif
