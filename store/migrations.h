/*
 * migrations.h -- the schema steps compiled in from migrations/NNNN_name.sql (scripts/embed-migrations.sh).
 * The binary carries its own schema, so an installed wsproxy never looks for .sql files at run time.
 */
#ifndef WSP_MIGRATIONS_H
#define WSP_MIGRATIONS_H

#include <stddef.h>

struct migration {
    int version;      /* NNNN from the file name; strictly increasing */
    const char *name; /* file name, for messages */
    const char *sql;  /* the whole file */
};

extern const struct migration wsp_migrations[];
extern const size_t wsp_num_migrations;
/* The PostgreSQL dialect (migrations/pg/): same version numbers, from 5 on. */
extern const struct migration wsp_pg_migrations[];
extern const size_t wsp_num_pg_migrations;

#endif
