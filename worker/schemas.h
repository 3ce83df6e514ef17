/*
 * schemas: the SQL migrations of schemas/NNN_*.sql, compiled into the binary (the build
 * generates build/gen/schemas.c) so that `metadata-worker migrate` needs no files.
 */
#ifndef MW_SCHEMAS_H
#define MW_SCHEMAS_H

typedef struct schema_migration {
    int version;
    const char *name;
    const char *sql;
} schema_migration;

extern const schema_migration schema_migrations[];
extern const int schema_migrations_count;

#endif
