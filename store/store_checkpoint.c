/*
 * store_checkpoint.c -- WAL checkpoints on a thread with its own connection, so the event loop never
 * copies WAL pages back into the database or waits for the fsyncs a checkpoint makes (even with
 * synchronous=NORMAL). The loop's commits only append to the WAL.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

struct store_ckpt {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sqlite3 *db;   /* used by the thread only, once started */
    int threshold; /* WAL frames after a commit that ask for a checkpoint */
    /* under mu */
    bool wanted;
    bool stop;
    int wal_frames;
    uint64_t runs;
    uint64_t failures;
    char last_error[128];
};

/* Runs on the loop thread after every commit of the main connection. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct store_ckpt *c = arg;

    (void)db;
    (void)name;
    pthread_mutex_lock(&c->mu);
    c->wal_frames = frames;
    if (frames >= c->threshold && !c->wanted) {
        c->wanted = true;
        pthread_cond_signal(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
    struct store_ckpt *c = arg;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->wanted && !c->stop)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop)
            break;
        c->wanted = false;
        pthread_mutex_unlock(&c->mu);

        /* PASSIVE: copies what no reader still needs and never blocks the writer. The writer
         * restarts the WAL from its start at its next transaction once all of it is copied. */
        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

        pthread_mutex_lock(&c->mu);
        c->runs++;
        if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) {
            c->failures++;
            snprintf(c->last_error, sizeof c->last_error, "checkpoint: %s", sqlite3_errmsg(c->db));
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* The database's page size; SQLite's default if it cannot say. */
static int page_size(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    int n = 0;

    if (sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return n >= 512 ? n : 4096;
}

int store_ckpt_start(struct store *st, const char *path, const struct store_opts *o)
{
    struct store_ckpt *c;
    char buf[64];
    int rc;

    if (sqlite3_threadsafe() == 0 || !(c = calloc(1, sizeof *c)))
        return -1;
    if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
        goto fail;
    /* Frames are pages of the file's own size (STORE_PAGE_SIZE, or what an older file has). */
    c->threshold = STORE_CKPT_BYTES / page_size(c->db);
    /* The checkpointing connection decides how checkpoints sync: the same as the writer. */
    snprintf(buf, sizeof buf, "PRAGMA synchronous = %s",
             o->synchronous == STORE_SYNC_FULL ? "FULL" : "NORMAL");
    if (sqlite3_exec(c->db, buf, NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_busy_timeout(c->db, o->busy_timeout_ms > 0 ? o->busy_timeout_ms : 0);
    if (pthread_mutex_init(&c->mu, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        pthread_mutex_destroy(&c->mu);
        goto fail;
    }
    if ((rc = pthread_create(&c->thread, NULL, ckpt_main, c)) != 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        goto fail;
    }
    /* Replaces SQLite's own autocheckpoint, which would run inside the loop's commit. */
    sqlite3_wal_hook(st->db, wal_hook, c);
    st->ckpt = c;
    return 0;
fail:
    sqlite3_close(c->db);
    free(c);
    return -1;
}

void store_ckpt_stop(struct store *st)
{
    struct store_ckpt *c = st->ckpt;

    if (!c)
        return;
    sqlite3_wal_hook(st->db, NULL, NULL);
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    sqlite3_close(c->db);
    free(c);
    st->ckpt = NULL;
}

void sq_wal_stats(struct store *st, struct store_wal_stats *out)
{
    struct store_ckpt *c = st->ckpt;

    memset(out, 0, sizeof *out);
    if (!c)
        return;
    out->background = true;
    pthread_mutex_lock(&c->mu);
    out->wal_frames = c->wal_frames;
    out->checkpoints = c->runs;
    out->checkpoint_failures = c->failures;
    snprintf(out->last_error, sizeof out->last_error, "%s", c->last_error);
    pthread_mutex_unlock(&c->mu);
}
