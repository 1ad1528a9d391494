/*
 * test_store_vfs.c -- the store's WAL VFS (store/store_vfs.c) at the level of its file methods:
 * consecutive WAL writes are gathered, a commit frame's page writes them all before its xWrite
 * returns, and every other call (a read first of all) sees what was gathered as written.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "store_internal.h"

#define PAGE 8192
#define HDR 24

struct fixture {
    char path[64];
    sqlite3_file *f;
};

static int setup(void **state)
{
    struct fixture *x = calloc(1, sizeof *x);
    sqlite3_vfs *vfs;
    int fd, flags;

    assert_non_null(x);
    assert_int_equal(sqlite3_initialize(), SQLITE_OK);
    assert_int_equal(store_vfs_register(), 0);
    assert_non_null(vfs = sqlite3_vfs_find(STORE_VFS_NAME));
    strcpy(x->path, "/tmp/test_store_vfs_XXXXXX");
    fd = mkstemp(x->path);
    assert_true(fd >= 0);
    close(fd);
    assert_non_null(x->f = calloc(1, (size_t)vfs->szOsFile));
    /* a WAL file as SQLite opens one (the name need not end in -wal for the unix VFS) */
    assert_int_equal(vfs->xOpen(vfs, x->path, x->f,
                                SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_WAL, &flags),
                     SQLITE_OK);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *x = *state;

    if (x->f->pMethods)
        x->f->pMethods->xClose(x->f);
    free(x->f);
    unlink(x->path);
    free(x);
    return 0;
}

static off_t size_on_disk(const struct fixture *x)
{
    struct stat st;

    assert_int_equal(stat(x->path, &st), 0);
    return st.st_size;
}

/* Frame i at its place after the 32-byte WAL header: its header (commit or not), then its page. */
static void write_frame(struct fixture *x, int i, bool commit)
{
    unsigned char hdr[HDR] = {0}, *page = malloc(PAGE);
    sqlite3_int64 off = 32 + (sqlite3_int64)i * (HDR + PAGE);

    assert_non_null(page);
    hdr[3] = (unsigned char)(i + 1); /* page number */
    if (commit)
        hdr[7] = 9; /* database size after the commit, in pages */
    memset(page, 'a' + i % 26, PAGE);
    assert_int_equal(x->f->pMethods->xWrite(x->f, hdr, HDR, off), SQLITE_OK);
    assert_int_equal(x->f->pMethods->xWrite(x->f, page, PAGE, off + HDR), SQLITE_OK);
    free(page);
}

static void test_vfs_gathers_frames_until_the_commit_frame(void **state)
{
    struct fixture *x = *state;
    unsigned char wal_hdr[32] = {0x37, 0x7f, 0x06, 0x82};

    assert_int_equal(x->f->pMethods->xWrite(x->f, wal_hdr, sizeof wal_hdr, 0), SQLITE_OK);
    write_frame(x, 0, false);
    write_frame(x, 1, false);
    assert_int_equal(size_on_disk(x), 0); /* gathered, not written */
    write_frame(x, 2, true);
    /* the commit frame's page wrote the whole transaction before returning */
    assert_int_equal(size_on_disk(x), 32 + 3 * (HDR + PAGE));
    {
        int fd = open(x->path, O_RDONLY);
        unsigned char b[4];
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, b, 4, 0), 4);
        assert_memory_equal(b, wal_hdr, 4);
        assert_int_equal(pread(fd, b, 1, 32 + 2 * (HDR + PAGE) + 7), 1);
        assert_int_equal(b[0], 9);
        assert_int_equal(pread(fd, b, 1, 32 + (HDR + PAGE) + HDR + PAGE - 1), 1);
        assert_int_equal(b[0], 'b');
        close(fd);
    }
}

static void test_vfs_read_sees_gathered_frames(void **state)
{
    struct fixture *x = *state;
    unsigned char *back = malloc(PAGE);

    assert_non_null(back);
    write_frame(x, 0, false);
    write_frame(x, 1, false);
    /* SQLite reads a page it spilled into the WAL before its transaction committed */
    assert_int_equal(x->f->pMethods->xRead(x->f, back, PAGE, 32 + (HDR + PAGE) + HDR), SQLITE_OK);
    assert_int_equal(back[0], 'b');
    assert_int_equal(back[PAGE - 1], 'b');
    assert_int_equal(size_on_disk(x), 32 + 2 * (HDR + PAGE));
    free(back);
}

static void test_vfs_other_calls_write_first(void **state)
{
    struct fixture *x = *state;
    sqlite3_int64 size = -1;

    write_frame(x, 0, false);
    assert_int_equal(x->f->pMethods->xFileSize(x->f, &size), SQLITE_OK);
    assert_int_equal(size, 32 + HDR + PAGE);

    write_frame(x, 1, false);
    assert_int_equal(x->f->pMethods->xSync(x->f, SQLITE_SYNC_NORMAL), SQLITE_OK);
    assert_int_equal(size_on_disk(x), 32 + 2 * (HDR + PAGE));

    /* a write elsewhere (SQLite rewriting an earlier header) writes what was gathered first */
    write_frame(x, 2, false);
    unsigned char h[HDR] = {0};
    assert_int_equal(x->f->pMethods->xWrite(x->f, h, HDR, 32), SQLITE_OK);
    assert_int_equal(size_on_disk(x), 32 + 3 * (HDR + PAGE));

    /* and closing writes the rest */
    write_frame(x, 3, false);
    assert_int_equal(x->f->pMethods->xClose(x->f), SQLITE_OK);
    x->f->pMethods = NULL;
    assert_int_equal(size_on_disk(x), 32 + 4 * (HDR + PAGE));
}

static void test_vfs_batch_never_exceeds_one_write(void **state)
{
    struct fixture *x = *state;

    /* 128 KiB - 1 is what the unix VFS writes in one call: 15 frames of 8 KiB fit, 16 do not */
    for (int i = 0; i < 15; i++)
        write_frame(x, i, false);
    assert_int_equal(size_on_disk(x), 0);
    write_frame(x, 15, false);
    off_t n = size_on_disk(x);
    assert_true(n > 0 && n < 32 + 16 * (HDR + PAGE));
    write_frame(x, 16, true);
    assert_int_equal(size_on_disk(x), 32 + 17 * (HDR + PAGE));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vfs_gathers_frames_until_the_commit_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vfs_read_sees_gathered_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vfs_other_calls_write_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vfs_batch_never_exceeds_one_write, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
