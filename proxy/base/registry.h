/*
 * registry.h -- in-memory index of live connections: user -> its connections (several devices),
 * room -> connections of its members, client address -> connection count. O(1) add and remove:
 * the caller keeps the member node it got and hands it back to leave. No I/O.
 */
#ifndef WSP_REGISTRY_H
#define WSP_REGISTRY_H

#include <stddef.h>

struct registry_map;

struct reg_group;

struct reg_member {
    struct reg_group *group;
    struct reg_member *prev, *next; /* in the group */
    struct reg_member *link;        /* free for the owner: e.g. a conn's list of room memberships */
    void *item; /* the owner's object (chat: its per-connection state) */
};

struct reg_group {
    char *key;
    struct reg_member *head;
    size_t count;
};

struct registry_map *registry_map_new(void);
/* Frees the map and any groups/members still in it (members' owners must not use them after). */
void registry_map_free(struct registry_map *m);

/* Add item under key; returns the member node (owned by the map until registry_leave) or NULL on OOM. */
struct reg_member *registry_join(struct registry_map *m, const char *key, void *item);
/* Remove a member; frees the group when it becomes empty. Returns how many members the group still has. */
size_t registry_leave(struct registry_map *m, struct reg_member *mem);

/* The group for key, or NULL if nobody is in it. Iterate with g->head / member->next. */
struct reg_group *registry_find(struct registry_map *m, const char *key);
size_t registry_count(const struct registry_map *m, const char *key);
/* Number of non-empty groups. */
size_t registry_groups(const struct registry_map *m);

/* Per-key counters (connections per client address). */
struct registry_counter;
struct registry_counter *registry_counter_new(void);
void registry_counter_free(struct registry_counter *c);
size_t registry_counter_get(struct registry_counter *c, const char *key);
/* Adds delta (+1/-1); entries reaching 0 are removed. Returns the new value, or (size_t)-1 on OOM. */
size_t registry_counter_add(struct registry_counter *c, const char *key, int delta);

#endif
