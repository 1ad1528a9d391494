/*
 * store_vfs.c -- a thin VFS over SQLite's default one that writes a transaction's WAL frames with a
 * few large pwrites instead of two small ones per frame. Nothing else changes: every other file,
 * and every other call on the WAL, goes straight to the default VFS.
 *
 * SQLite writes a WAL frame as its 24-byte header, then the page right after it (walWriteOneFrame),
 * each with a pwrite of its own. A group commit of a few thousand messages writes a few hundred
 * frames, and on this kind of virtual machine the syscall and page-cache work per pwrite, not the
 * bytes, is most of the commit's cost (perf, persist load: the header pwrite alone was about a third
 * of it). So writes that follow each other in the WAL are gathered, up to WAL_BATCH_MAX bytes, and go
 * out in one pwrite:
 *
 * - when the page of a commit frame is written (its header's "database size" field is not zero):
 *   that xWrite returns only once the whole transaction is in the file, so a commit's frames are
 *   written before SQLite publishes them in the wal-index, and a write error is SQLite's to see,
 *   as before;
 * - when a write would not follow on, or not fit;
 * - before any other call on the file (read, sync, size, truncate, lock, close): SQLite reading back
 *   a frame it spilled in a large transaction reads it from the file.
 *
 * Frames gathered and not yet written belong to a transaction that has not committed: a crash loses
 * only what SQLite would not have recovered anyway (a WAL's uncommitted tail is ignored).
 */
#include <stdint.h>
#include <string.h>

#include "store_internal.h"

#define WAL_FRAME_HDR 24
/* At most 128 KiB - 1 per write: the unix VFS masks a write's length with 0x1ffff
 * (seekAndWriteFd), so a longer one would be cut short. */
#define WAL_BATCH_MAX 0x1ffff

struct wal_file {
    sqlite3_file base;    /* pMethods = &wal_methods */
    sqlite3_file *real;   /* the default VFS's file, in the same allocation after this struct */
    unsigned char *buf;   /* gathered writes, from held_off on */
    int held_n;           /* bytes gathered in buf */
    int buf_cap;
    sqlite3_int64 held_off;
    bool commit_next;     /* the last write was a commit frame's header: its page ends the batch */
};

static sqlite3_vfs *base_vfs;

#define REAL(f) (((struct wal_file *)(f))->real)

/* Write what is gathered (nothing to do when nothing is). */
static int held_write(struct wal_file *w)
{
    if (!w->held_n)
        return SQLITE_OK;
    int n = w->held_n;
    w->held_n = 0;
    return w->real->pMethods->xWrite(w->real, w->buf, n, w->held_off);
}

/* Room for n more bytes in buf; false when memory is short (the caller writes directly). */
static bool buf_reserve(struct wal_file *w, int n)
{
    int need = w->held_n + n;
    if (need <= w->buf_cap)
        return true;
    int cap = w->buf_cap ? w->buf_cap : 16384;
    while (cap < need)
        cap *= 2;
    if (cap > WAL_BATCH_MAX)
        cap = WAL_BATCH_MAX;
    unsigned char *b = sqlite3_realloc(w->buf, cap);
    if (!b)
        return false;
    w->buf = b;
    w->buf_cap = cap;
    return true;
}

/* A frame header's bytes 4-7: the database size in pages after a commit, 0 in other frames. */
static bool is_commit_header(const unsigned char *h)
{
    return (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int wal_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    struct wal_file *w = (struct wal_file *)f;
    bool ends_commit = w->commit_next && n != WAL_FRAME_HDR;
    int rc;

    w->commit_next = n == WAL_FRAME_HDR && is_commit_header(p);
    if (w->held_n && (off != w->held_off + w->held_n || w->held_n + n > WAL_BATCH_MAX) &&
        (rc = held_write(w)) != SQLITE_OK)
        return rc;
    if (n > WAL_BATCH_MAX || !buf_reserve(w, n)) {
        if ((rc = held_write(w)) != SQLITE_OK)
            return rc;
        return w->real->pMethods->xWrite(w->real, p, n, off);
    }
    if (!w->held_n)
        w->held_off = off;
    memcpy(w->buf + w->held_n, p, (size_t)n);
    w->held_n += n;
    return ends_commit ? held_write(w) : SQLITE_OK;
}

static int wal_close(sqlite3_file *f)
{
    struct wal_file *w = (struct wal_file *)f;
    int rc = held_write(w), rc2 = w->real->pMethods->xClose(w->real);
    sqlite3_free(w->buf);
    w->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

/* Every other method: write what is held, then pass the call on. */
#define FLUSHED(f) \
    do { \
        int rc_ = held_write((struct wal_file *)(f)); \
        if (rc_ != SQLITE_OK) \
            return rc_; \
    } while (0)

static int wal_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}

static int wal_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int wal_sync(sqlite3_file *f, int flags)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int wal_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int wal_lock(sqlite3_file *f, int lock)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xLock(REAL(f), lock);
}

static int wal_unlock(sqlite3_file *f, int lock)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}

static int wal_check_reserved(sqlite3_file *f, int *out)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int wal_file_control(sqlite3_file *f, int op, void *arg)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int wal_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int wal_device_characteristics(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int wal_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}

static int wal_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void wal_shm_barrier(sqlite3_file *f)
{
    held_write((struct wal_file *)f);
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int wal_shm_unmap(sqlite3_file *f, int del)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int wal_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}

static int wal_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    FLUSHED(f);
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

#define WAL_METHODS(version) \
    { \
        .iVersion = (version), .xClose = wal_close, .xRead = wal_read, .xWrite = wal_write, \
        .xTruncate = wal_truncate, .xSync = wal_sync, .xFileSize = wal_file_size, \
        .xLock = wal_lock, .xUnlock = wal_unlock, .xCheckReservedLock = wal_check_reserved, \
        .xFileControl = wal_file_control, .xSectorSize = wal_sector_size, \
        .xDeviceCharacteristics = wal_device_characteristics, \
        .xShmMap = (version) >= 2 ? wal_shm_map : NULL, \
        .xShmLock = (version) >= 2 ? wal_shm_lock : NULL, \
        .xShmBarrier = (version) >= 2 ? wal_shm_barrier : NULL, \
        .xShmUnmap = (version) >= 2 ? wal_shm_unmap : NULL, \
        .xFetch = (version) >= 3 ? wal_fetch : NULL, .xUnfetch = (version) >= 3 ? wal_unfetch : NULL, \
    }

/* by the io_methods version of the default VFS's file: 1, 2, 3 */
static const sqlite3_io_methods wal_methods[3] = {WAL_METHODS(1), WAL_METHODS(2), WAL_METHODS(3)};

/* The default VFS's file sits after ours, aligned for any type. */
#define REAL_OFFSET ((sizeof(struct wal_file) + 15) & ~(size_t)15)

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)vfs;
    if (!(flags & SQLITE_OPEN_WAL))
        return base_vfs->xOpen(base_vfs, name, f, flags, out_flags);
    struct wal_file *w = (struct wal_file *)f;
    memset(w, 0, sizeof(*w));
    w->real = (sqlite3_file *)((char *)f + REAL_OFFSET);
    int rc = base_vfs->xOpen(base_vfs, name, w->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        w->base.pMethods = NULL;
        return rc;
    }
    /* methods the default VFS's file lacks (older io_methods) are not offered either */
    w->base.pMethods = &wal_methods[w->real->pMethods->iVersion >= 3 ? 2 : w->real->pMethods->iVersion - 1];
    return SQLITE_OK;
}

static int vfs_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    (void)v;
    return base_vfs->xDelete(base_vfs, name, sync_dir);
}

static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return base_vfs->xAccess(base_vfs, name, flags, out);
}

static int vfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return base_vfs->xFullPathname(base_vfs, name, n, out);
}

static void *vfs_dlopen(sqlite3_vfs *v, const char *name)
{
    (void)v;
    return base_vfs->xDlOpen(base_vfs, name);
}

static void vfs_dlerror(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    base_vfs->xDlError(base_vfs, n, out);
}

static void (*vfs_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return base_vfs->xDlSym(base_vfs, h, sym);
}

static void vfs_dlclose(sqlite3_vfs *v, void *h)
{
    (void)v;
    base_vfs->xDlClose(base_vfs, h);
}

static int vfs_randomness(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return base_vfs->xRandomness(base_vfs, n, out);
}

static int vfs_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return base_vfs->xSleep(base_vfs, us);
}

static int vfs_current_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return base_vfs->xCurrentTime(base_vfs, out);
}

static int vfs_get_last_error(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return base_vfs->xGetLastError ? base_vfs->xGetLastError(base_vfs, n, out) : 0;
}

static int vfs_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

static sqlite3_vfs wal_vfs = {
    .iVersion = 2,
    .zName = STORE_VFS_NAME,
    .xOpen = vfs_open,
    .xDelete = vfs_delete,
    .xAccess = vfs_access,
    .xFullPathname = vfs_full_pathname,
    .xDlOpen = vfs_dlopen,
    .xDlError = vfs_dlerror,
    .xDlSym = vfs_dlsym,
    .xDlClose = vfs_dlclose,
    .xRandomness = vfs_randomness,
    .xSleep = vfs_sleep,
    .xCurrentTime = vfs_current_time,
    .xGetLastError = vfs_get_last_error,
    .xCurrentTimeInt64 = vfs_current_time_int64,
};

int store_vfs_register(void)
{
    if (base_vfs)
        return 0;
    sqlite3_vfs *def = sqlite3_vfs_find(NULL);
    if (!def || def->iVersion < 2)
        return -1;
    base_vfs = def;
    wal_vfs.szOsFile = (int)(REAL_OFFSET + (size_t)def->szOsFile);
    wal_vfs.mxPathname = def->mxPathname;
    if (sqlite3_vfs_register(&wal_vfs, 0) != SQLITE_OK) {
        base_vfs = NULL;
        return -1;
    }
    return 0;
}
