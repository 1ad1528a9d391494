/*
 * test_registry.c -- user/room -> connections groups and per-address counters: O(1) leave at any
 * position, group lifetime, several devices and rooms per connection, and every out-of-memory path.
 * registry.c is included so its allocations can be made to fail on demand.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocation failure injection: the fail_at-th calloc/strdup from now fails (0 = none fails). */
static int alloc_calls, fail_at;

static bool alloc_should_fail(void)
{
    return fail_at > 0 && ++alloc_calls == fail_at;
}

static void *fail_calloc(size_t n, size_t size)
{
    return alloc_should_fail() ? NULL : calloc(n, size);
}

static char *fail_strdup(const char *s)
{
    return alloc_should_fail() ? NULL : strdup(s);
}

static void alloc_fail_nth(int n)
{
    alloc_calls = 0;
    fail_at = n;
}

#define calloc(n, size) fail_calloc(n, size)
#define strdup(s) fail_strdup(s)
#include "../../proxy/base/registry.c"
#undef calloc
#undef strdup

/* Stand-in connections: the registry only stores and compares the pointers. */
static struct conn *fake_conn(int i)
{
    static char slots[64];
    return (struct conn *)(void *)&slots[i];
}

/* The group's list, walked both ways, must hold exactly want[0..n) in head-first order. */
static void assert_group(struct registry_map *m, const char *key, struct conn *const *want,
                         size_t n)
{
    struct reg_group *g = registry_find(m, key);
    if (n == 0) {
        assert_null(g);
        assert_int_equal(registry_count(m, key), 0);
        return;
    }
    assert_non_null(g);
    assert_string_equal(g->key, key);
    assert_int_equal(g->count, n);
    assert_int_equal(registry_count(m, key), n);
    assert_null(g->head->prev);
    size_t i = 0;
    struct reg_member *last = NULL;
    for (struct reg_member *mem = g->head; mem; mem = mem->next, i++) {
        assert_true(i < n);
        assert_ptr_equal(mem->item, want[i]);
        assert_ptr_equal(mem->group, g);
        if (mem->next)
            assert_ptr_equal(mem->next->prev, mem);
        last = mem;
    }
    assert_int_equal(i, n);
    for (struct reg_member *mem = last; mem; mem = mem->prev)
        i--;
    assert_int_equal(i, 0);
}

static void test_registry_empty(void **state)
{
    (void)state;
    registry_map_free(NULL);
    registry_counter_free(NULL);
    struct registry_map *m = registry_map_new();
    assert_non_null(m);
    assert_null(registry_find(m, "alice"));
    assert_int_equal(registry_count(m, "alice"), 0);
    assert_int_equal(registry_groups(m), 0);
    registry_map_free(m);
}

static void test_registry_join_copies_key(void **state)
{
    char key[16] = "alice";

    (void)state;
    struct registry_map *m = registry_map_new();
    struct reg_member *a = registry_join(m, key, fake_conn(1));
    assert_non_null(a);
    assert_null(a->link); /* the owner's field starts clear */
    strcpy(key, "mallory"); /* the caller's buffer may change or die */
    struct conn *want[] = {fake_conn(1)};
    assert_group(m, "alice", want, 1);
    assert_null(registry_find(m, "mallory"));
    registry_map_free(m);
}

static void test_registry_devices_of_one_user(void **state)
{
    (void)state;
    struct registry_map *m = registry_map_new();
    for (int i = 0; i < 4; i++)
        assert_non_null(registry_join(m, "alice", fake_conn(i)));
    assert_non_null(registry_join(m, "bob", fake_conn(9)));
    assert_int_equal(registry_groups(m), 2);
    /* newest first */
    struct conn *all[] = {fake_conn(3), fake_conn(2), fake_conn(1), fake_conn(0)};
    assert_group(m, "alice", all, 4);
    registry_map_free(m);
}

/* Leave in several orders of 4 members: the list stays consistent, the group goes with the last. */
static void test_registry_leave_any_position(void **state)
{
    static const int orders[][4] = {
        {0, 1, 2, 3}, {3, 2, 1, 0}, {1, 2, 0, 3}, {2, 0, 3, 1}, {3, 0, 2, 1}, {1, 3, 0, 2},
    };

    (void)state;
    for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
        struct registry_map *m = registry_map_new();
        struct reg_member *mem[4];
        bool gone[4] = {false};
        for (int i = 0; i < 4; i++)
            mem[i] = registry_join(m, "lobby", fake_conn(i));
        assert_non_null(registry_join(m, "other", fake_conn(7)));
        for (int k = 0; k < 4; k++) {
            int i = orders[o][k];
            assert_int_equal(registry_leave(m, mem[i]), (size_t)(3 - k));
            gone[i] = true;
            struct conn *want[4];
            size_t n = 0;
            for (int j = 3; j >= 0; j--)
                if (!gone[j])
                    want[n++] = fake_conn(j);
            assert_group(m, "lobby", want, n);
        }
        assert_int_equal(registry_groups(m), 1);
        struct conn *other[] = {fake_conn(7)};
        assert_group(m, "other", other, 1);
        registry_map_free(m);
    }
}

static void test_registry_group_recreated_after_empty(void **state)
{
    (void)state;
    struct registry_map *m = registry_map_new();
    struct reg_member *a = registry_join(m, "alice", fake_conn(1));
    assert_int_equal(registry_leave(m, a), 0);
    assert_int_equal(registry_groups(m), 0);
    assert_null(registry_find(m, "alice"));
    a = registry_join(m, "alice", fake_conn(2));
    struct conn *want[] = {fake_conn(2)};
    assert_group(m, "alice", want, 1);
    assert_int_equal(registry_groups(m), 1);
    registry_map_free(m);
}

static void test_registry_same_conn_many_groups(void **state)
{
    (void)state;
    struct registry_map *rooms = registry_map_new();
    struct conn *c = fake_conn(5);
    /* a connection in three rooms, its memberships chained through ->link as chat.c does */
    struct reg_member *list = NULL;
    const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        struct reg_member *mem = registry_join(rooms, names[i], c);
        mem->link = list;
        list = mem;
        assert_non_null(registry_join(rooms, names[i], fake_conn(6)));
    }
    assert_int_equal(registry_groups(rooms), 3);
    while (list) {
        struct reg_member *next = list->link; /* the registry never touches link */
        assert_int_equal(registry_leave(rooms, list), 1);
        list = next;
    }
    for (int i = 0; i < 3; i++) {
        struct conn *want[] = {fake_conn(6)};
        assert_group(rooms, names[i], want, 1);
    }
    registry_map_free(rooms);
}

static void test_registry_same_conn_twice_is_two_members(void **state)
{
    (void)state;
    struct registry_map *m = registry_map_new();
    struct reg_member *a = registry_join(m, "alice", fake_conn(1));
    struct reg_member *b = registry_join(m, "alice", fake_conn(1));
    assert_ptr_not_equal(a, b);
    assert_int_equal(registry_count(m, "alice"), 2);
    assert_int_equal(registry_leave(m, a), 1);
    assert_int_equal(registry_leave(m, b), 0);
    registry_map_free(m);
}

static void test_registry_many_keys(void **state)
{
    enum { N = 2000 };
    static struct reg_member *mem[N][2];
    char key[32];

    (void)state;
    struct registry_map *m = registry_map_new();
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "user%d", i);
        mem[i][0] = registry_join(m, key, fake_conn(0));
        mem[i][1] = registry_join(m, key, fake_conn(1));
        assert_non_null(mem[i][0]);
        assert_non_null(mem[i][1]);
    }
    assert_int_equal(registry_groups(m), N);
    for (int i = 0; i < N; i += 2) {
        assert_int_equal(registry_leave(m, mem[i][1]), 1);
        assert_int_equal(registry_leave(m, mem[i][0]), 0);
    }
    assert_int_equal(registry_groups(m), N / 2);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "user%d", i);
        assert_int_equal(registry_count(m, key), i % 2 ? 2 : 0);
    }
    /* the rest is freed with the map (members included: ASan/LSan would see a leak) */
    registry_map_free(m);
}

static void test_registry_counter(void **state)
{
    static const struct {
        const char *key;
        int delta;
        size_t want;
    } steps[] = {
        {"10.0.0.1", -1, 0}, /* decrement of a missing key: nothing created */
        {"10.0.0.1", +1, 1},   {"10.0.0.1", +1, 2},  {"10.0.0.2", +1, 1},
        {"10.0.0.1", -1, 1},   {"10.0.0.1", +3, 4},  {"10.0.0.1", -4, 0},
        {"10.0.0.1", -1, 0},   /* removed at 0, so this is a missing key again */
        {"10.0.0.2", -5, 0},   /* never below 0 */
        {"::1", 0, 0},         /* 0 on a missing key creates nothing */
        {"::1", +1, 1},
    };

    (void)state;
    struct registry_counter *c = registry_counter_new();
    assert_non_null(c);
    assert_int_equal(registry_counter_get(c, "10.0.0.1"), 0);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        assert_int_equal(registry_counter_add(c, steps[i].key, steps[i].delta), steps[i].want);
        assert_int_equal(registry_counter_get(c, steps[i].key), steps[i].want);
    }
    assert_int_equal(registry_counter_get(c, "10.0.0.2"), 0);
    assert_int_equal(HASH_COUNT(c->entries), 1); /* zeroed entries are gone, not kept at 0 */
    registry_counter_free(c); /* frees the remaining "::1" */
}

static void test_registry_join_oom(void **state)
{
    (void)state;
    struct registry_map *m = registry_map_new();

    /* new group: 1 = group with its key, 2 = member; each failure leaves no trace */
    for (int n = 1; n <= 2; n++) {
        alloc_fail_nth(n);
        assert_null(registry_join(m, "alice", fake_conn(1)));
        alloc_fail_nth(0);
        assert_null(registry_find(m, "alice"));
        assert_int_equal(registry_groups(m), 0);
    }
    /* existing group: only the member is allocated; the group and its members stay */
    struct reg_member *a = registry_join(m, "alice", fake_conn(1));
    assert_non_null(a);
    alloc_fail_nth(1);
    assert_null(registry_join(m, "alice", fake_conn(2)));
    alloc_fail_nth(0);
    struct conn *want[] = {fake_conn(1)};
    assert_group(m, "alice", want, 1);
    assert_int_equal(registry_groups(m), 1);
    /* and it works again once memory is back */
    assert_non_null(registry_join(m, "alice", fake_conn(2)));
    assert_int_equal(registry_count(m, "alice"), 2);
    registry_map_free(m);
}

static void test_registry_counter_oom(void **state)
{
    (void)state;
    struct registry_counter *c = registry_counter_new();

    /* 1 = entry, 2 = key copy */
    for (int n = 1; n <= 2; n++) {
        alloc_fail_nth(n);
        assert_int_equal(registry_counter_add(c, "10.0.0.1", +1), (size_t)-1);
        alloc_fail_nth(0);
        assert_int_equal(registry_counter_get(c, "10.0.0.1"), 0);
        assert_int_equal(HASH_COUNT(c->entries), 0);
    }
    /* an existing entry needs no allocation */
    assert_int_equal(registry_counter_add(c, "10.0.0.1", +1), 1);
    alloc_fail_nth(1);
    assert_int_equal(registry_counter_add(c, "10.0.0.1", +1), 2);
    alloc_fail_nth(0);
    registry_counter_free(c);

    alloc_fail_nth(1);
    assert_null(registry_map_new());
    alloc_fail_nth(1);
    assert_null(registry_counter_new());
    alloc_fail_nth(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_empty),
        cmocka_unit_test(test_registry_join_copies_key),
        cmocka_unit_test(test_registry_devices_of_one_user),
        cmocka_unit_test(test_registry_leave_any_position),
        cmocka_unit_test(test_registry_group_recreated_after_empty),
        cmocka_unit_test(test_registry_same_conn_many_groups),
        cmocka_unit_test(test_registry_same_conn_twice_is_two_members),
        cmocka_unit_test(test_registry_many_keys),
        cmocka_unit_test(test_registry_counter),
        cmocka_unit_test(test_registry_join_oom),
        cmocka_unit_test(test_registry_counter_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
