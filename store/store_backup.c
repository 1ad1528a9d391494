/*
 * store_backup.c -- an online, consistent copy of the database with SQLite's backup API, for
 * `wsctl backup`. The copy is taken in one read transaction, so it is one committed state even while
 * the server writes (WAL: the reader does not block the writer, nor the writer the reader).
 */
#include <stdio.h>

#include "store_internal.h"

int sq_backup(struct store *st, const char *dest_path, int64_t *pages)
{
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(dest_path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        store_failf(st, STORE_ERR_IO, "backup to %s: %s", dest_path,
                    dst ? sqlite3_errmsg(dst) : "out of memory");
        sqlite3_close(dst);
        return STORE_ERR_IO;
    }
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", st->db, "main");
    if (!b) {
        store_failf(st, STORE_ERR_IO, "backup to %s: %s", dest_path, sqlite3_errmsg(dst));
        sqlite3_close(dst);
        return STORE_ERR_IO;
    }
    /* Every page in one step: one read transaction, one consistent state. Retry while locked. */
    int tries = 0;
    do {
        rc = sqlite3_backup_step(b, -1);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
            sqlite3_sleep(50);
    } while ((rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && ++tries < 100);
    if (pages)
        *pages = sqlite3_backup_pagecount(b);
    sqlite3_backup_finish(b);
    int code = STORE_OK;
    if (rc != SQLITE_DONE) {
        code = rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? STORE_ERR_BUSY : STORE_ERR_IO;
        store_failf(st, code, "backup to %s: %s", dest_path, sqlite3_errstr(rc));
    }
    if (sqlite3_close(dst) != SQLITE_OK && code == STORE_OK)
        code = store_failf(st, STORE_ERR_IO, "backup to %s: cannot close the copy", dest_path);
    return code;
}
