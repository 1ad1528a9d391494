/*
 * registry.c -- string-keyed groups of connections on uthash (Debian's uthash-dev), with intrusive
 * doubly-linked member lists so leaving is O(1) and never scans.
 */
#include "base/registry.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#undef uthash_fatal
#define uthash_fatal(msg) abort()

struct group {
    struct reg_group pub;
    UT_hash_handle hh;
    char keybuf[]; /* pub.key: one allocation per group (one per online user in the user map) */
};

struct registry_map {
    struct group *groups;
    size_t num_groups;
};

struct counter_entry {
    char *key;
    size_t n;
    UT_hash_handle hh;
};

struct registry_counter {
    struct counter_entry *entries;
};

struct registry_map *registry_map_new(void)
{
    return calloc(1, sizeof(struct registry_map));
}

static void group_free(struct registry_map *m, struct group *g)
{
    HASH_DEL(m->groups, g);
    m->num_groups--;
    free(g);
}

void registry_map_free(struct registry_map *m)
{
    if (!m)
        return;
    struct group *g, *tmp;
    HASH_ITER(hh, m->groups, g, tmp)
    {
        struct reg_member *mem = g->pub.head;
        while (mem) {
            struct reg_member *next = mem->next;
            free(mem);
            mem = next;
        }
        group_free(m, g);
    }
    free(m);
}

static struct group *find(const struct registry_map *m, const char *key)
{
    struct group *g = NULL;
    HASH_FIND_STR(m->groups, key, g);
    return g;
}

struct reg_member *registry_join(struct registry_map *m, const char *key, void *item)
{
    struct group *g = find(m, key);
    if (!g) {
        size_t klen = strlen(key);
        g = calloc(1, sizeof(*g) + klen + 1);
        if (!g)
            return NULL;
        memcpy(g->keybuf, key, klen + 1);
        g->pub.key = g->keybuf;
        HASH_ADD_KEYPTR(hh, m->groups, g->pub.key, strlen(g->pub.key), g);
        m->num_groups++;
    }
    struct reg_member *mem = calloc(1, sizeof(*mem));
    if (!mem) {
        if (g->pub.count == 0)
            group_free(m, g);
        return NULL;
    }
    mem->group = &g->pub;
    mem->item = item;
    mem->next = g->pub.head;
    if (g->pub.head)
        g->pub.head->prev = mem;
    g->pub.head = mem;
    g->pub.count++;
    return mem;
}

size_t registry_leave(struct registry_map *m, struct reg_member *mem)
{
    struct reg_group *pg = mem->group;
    if (mem->prev)
        mem->prev->next = mem->next;
    else
        pg->head = mem->next;
    if (mem->next)
        mem->next->prev = mem->prev;
    size_t left = --pg->count;
    free(mem);
    if (left == 0)
        group_free(m, (struct group *)pg);
    return left;
}

struct reg_group *registry_find(struct registry_map *m, const char *key)
{
    struct group *g = find(m, key);
    return g ? &g->pub : NULL;
}

size_t registry_count(const struct registry_map *m, const char *key)
{
    struct group *g = find(m, key);
    return g ? g->pub.count : 0;
}

size_t registry_groups(const struct registry_map *m)
{
    return m->num_groups;
}

struct registry_counter *registry_counter_new(void)
{
    return calloc(1, sizeof(struct registry_counter));
}

void registry_counter_free(struct registry_counter *c)
{
    if (!c)
        return;
    struct counter_entry *e, *tmp;
    HASH_ITER(hh, c->entries, e, tmp)
    {
        HASH_DEL(c->entries, e);
        free(e->key);
        free(e);
    }
    free(c);
}

size_t registry_counter_get(struct registry_counter *c, const char *key)
{
    struct counter_entry *e = NULL;
    HASH_FIND_STR(c->entries, key, e);
    return e ? e->n : 0;
}

size_t registry_counter_add(struct registry_counter *c, const char *key, int delta)
{
    struct counter_entry *e = NULL;
    HASH_FIND_STR(c->entries, key, e);
    if (!e) {
        if (delta <= 0)
            return 0;
        e = calloc(1, sizeof(*e));
        if (!e || !(e->key = strdup(key))) {
            free(e);
            return (size_t)-1;
        }
        HASH_ADD_KEYPTR(hh, c->entries, e->key, strlen(e->key), e);
    }
    if (delta < 0 && e->n < (size_t)-delta)
        e->n = 0;
    else
        e->n += (size_t)(long)delta;
    size_t n = e->n;
    if (n == 0) {
        HASH_DEL(c->entries, e);
        free(e->key);
        free(e);
    }
    return n;
}
