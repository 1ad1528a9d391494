/*
 * test_events.c -- chat_event_member, the function the rooms code calls (issue 13): the event joins
 * the loop's transaction, carries room/user/reason, respects [events] types and name rules, and is a
 * no-op when events are off. Also backend_parse_target's accepted and refused targets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "chat/chat.h"
#include "net/backend.h"
#include "net/loop.h"
#include "store.h"

struct fixture {
    char dir[64];
    char db[96];
    struct px_config cfg;
    struct store *st;
    struct loop lp;
    struct chat *ch;
};

struct seen {
    int n;
    char type[8][32];
    char payload[8][256];
};

static int record(void *ctx, const struct store_event *e)
{
    struct seen *s = ctx;
    assert_true(s->n < 8);
    snprintf(s->type[s->n], sizeof s->type[0], "%s", e->type);
    snprintf(s->payload[s->n], sizeof s->payload[0], "%s", e->payload);
    s->n++;
    return 0;
}

static struct fixture *start(const char *events_ini)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/test_events_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/db", f->dir);
    char ini[128];
    snprintf(ini, sizeof ini, "%s/wsproxy.ini", f->dir);
    FILE *fp = fopen(ini, "w");
    assert_non_null(fp);
    fprintf(fp, "[store]\npath = %s\n[events]\n%s", f->db, events_ini);
    fclose(fp);
    assert_int_equal(config_load(&f->cfg, ini, NULL, stderr), 0);
    char err[256];
    assert_int_equal(store_open(&f->st, f->db, NULL, err, sizeof err), 0);
    assert_int_equal(loop_init(&f->lp, &f->cfg, f->st), 0);
    f->ch = chat_new(&f->lp, NULL);
    assert_non_null(f->ch);
    unlink(ini);
    return f;
}

static void stop(struct fixture *f)
{
    loop_commit(&f->lp);
    chat_free(f->ch);
    loop_release(&f->lp);
    store_close(f->st);
    config_release(&f->cfg);
    char side[128];
    unlink(f->db);
    snprintf(side, sizeof side, "%s-wal", f->db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", f->db);
    unlink(side);
    rmdir(f->dir);
    free(f);
}

static int take_all(struct fixture *f, struct seen *s)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(store_outbox_scan(f->st, INT64_MAX / 4, 32, record, NULL, s), 0);
    return s->n;
}

static void test_events_member_in_transaction(void **state)
{
    (void)state;
    struct fixture *f = start("target = http://127.0.0.1:9/hook\nsecret = s\n");
    struct seen s;
    chat_event_member(f->ch, "lobby", "alice", true, "api");
    assert_true(loop_tx_open(&f->lp)); /* joined (opened) the loop's transaction */
    loop_commit(&f->lp);
    chat_event_member(f->ch, "lobby", "alice", false, NULL);
    loop_commit(&f->lp);
    assert_int_equal(take_all(f, &s), 2);
    assert_string_equal(s.type[0], "member.added");
    assert_string_equal(s.payload[0], "{\"room\":\"lobby\",\"user\":\"alice\",\"reason\":\"api\"}");
    assert_string_equal(s.type[1], "member.removed");
    assert_string_equal(s.payload[1], "{\"room\":\"lobby\",\"user\":\"alice\"}");
    /* invalid names record nothing */
    chat_event_member(f->ch, "", "alice", true, NULL);
    chat_event_member(f->ch, "lobby", "bad\nname", true, NULL);
    loop_commit(&f->lp);
    assert_int_equal(take_all(f, &s), 2); /* the two above, still queued: nothing new */
    stop(f);
}

static void test_events_member_type_filter_and_off(void **state)
{
    (void)state;
    struct seen s;
    struct fixture *f = start("target = http://127.0.0.1:9/hook\nsecret = s\ntypes = member.removed\n");
    chat_event_member(f->ch, "lobby", "bob", true, NULL);
    chat_event_member(f->ch, "lobby", "bob", false, "kicked");
    loop_commit(&f->lp);
    assert_int_equal(take_all(f, &s), 1);
    assert_string_equal(s.type[0], "member.removed");
    stop(f);
    f = start(""); /* no target: events off, nothing recorded */
    chat_event_member(f->ch, "lobby", "bob", true, NULL);
    loop_commit(&f->lp);
    assert_int_equal(take_all(f, &s), 0);
    stop(f);
}

static void test_events_parse_target(void **state)
{
    (void)state;
    struct backend_target t;
    char err[128];
    assert_int_equal(backend_parse_target("http://127.0.0.1:8000/hooks/ws", &t, err, sizeof err), 0);
    assert_int_equal(t.kind, BACKEND_HTTP);
    assert_string_equal(t.host, "127.0.0.1");
    assert_int_equal(t.port, 8000);
    assert_string_equal(t.path, "/hooks/ws");
    assert_int_equal(backend_parse_target("http://app.internal/x", &t, err, sizeof err), 0);
    assert_int_equal(t.port, 80);
    assert_int_equal(backend_parse_target("fastcgi://[::1]:9000/srv/e.php", &t, err, sizeof err), 0);
    assert_int_equal(t.kind, BACKEND_FCGI);
    assert_string_equal(t.host, "::1");
    assert_int_equal(t.port, 9000);
    assert_string_equal(t.path, "/srv/e.php");
    assert_int_equal(backend_parse_target("fastcgi:unix:/run/php/php8.2-fpm.sock:/srv/e.php", &t, err,
                                          sizeof err), 0);
    assert_string_equal(t.unix_path, "/run/php/php8.2-fpm.sock");
    assert_string_equal(t.path, "/srv/e.php");
    assert_int_equal(backend_parse_target("fastcgi://host/srv/e.php", &t, err, sizeof err), -1);
    assert_int_equal(backend_parse_target("fastcgi:unix:relative.sock:/e.php", &t, err, sizeof err), -1);
    assert_int_equal(backend_parse_target("fastcgi:unix:/x.sock", &t, err, sizeof err), -1);
    assert_int_equal(backend_parse_target("https://x/y", &t, err, sizeof err), -1);
    assert_int_equal(backend_parse_target("http://x:99999/y", &t, err, sizeof err), -1);
    assert_int_equal(backend_parse_target("http://x", &t, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_member_in_transaction),
        cmocka_unit_test(test_events_member_type_filter_and_off),
        cmocka_unit_test(test_events_parse_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
