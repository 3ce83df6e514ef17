/* fuzz_check.h: CHECK(cond, fmt, ...) for the fuzz targets' invariants. A failed invariant
 * prints where and why, then abort()s so libFuzzer keeps the input as a crash reproducer.
 * Define FUZZ_NAME (the target's name, a string) before including. */
#ifndef MW_FUZZ_CHECK_H
#define MW_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, FUZZ_NAME ": invariant failed at %s:%d: %s\n  ", __FILE__,      \
                    __LINE__, #cond);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

#endif
