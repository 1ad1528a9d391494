/*
 * store_pg.c -- the PostgreSQL backend's core: connecting with a bounded wait, the schema migrations
 * (migrations/pg/, recorded in wsp_schema, applied under an advisory lock so nodes starting together
 * take turns), the statement runner, transactions and errors. The per-table files (store_pg_*.c)
 * hold the statements. Same contracts as the SQLite backend (store.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migrations.h"
#include "store_pg_internal.h"

/* The advisory lock key migrations run under ("wsproxy" in ASCII, as a number). */
#define PG_MIGRATE_LOCK INT64_C(0x77737072)

/* ---- Small helpers ---- */

int64_t pg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool pg_name_ok(const char *s)
{
    return s && *s;
}

const char *pg_via_name(enum store_via via)
{
    switch (via) {
    case STORE_VIA_CLAIM: return "claim";
    case STORE_VIA_API: return "api";
    case STORE_VIA_JOIN: break;
    }
    return "join";
}

enum store_via pg_via_parse(const char *s)
{
    if (s && !strcmp(s, "claim"))
        return STORE_VIA_CLAIM;
    if (s && !strcmp(s, "api"))
        return STORE_VIA_API;
    return STORE_VIA_JOIN;
}

void pga_init(struct pg_array *a)
{
    a->p = NULL;
    a->len = a->cap = 0;
    a->oom = false;
}

/* Room for n more bytes (and the final NUL). */
static bool pga_room(struct pg_array *a, size_t n)
{
    if (a->oom)
        return false;
    if (a->len + n + 1 <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->len + n + 1)
        cap *= 2;
    char *p = realloc(a->p, cap);
    if (!p) {
        a->oom = true;
        return false;
    }
    a->p = p;
    a->cap = cap;
    return true;
}

/* The separator before an element: "{" for the first, "," after. */
static void pga_sep(struct pg_array *a)
{
    if (pga_room(a, 1)) {
        a->p[a->len] = a->len ? ',' : '{';
        a->len++;
    }
}

void pga_text(struct pg_array *a, const char *s)
{
    pga_sep(a);
    if (!s) {
        if (pga_room(a, 4)) {
            memcpy(a->p + a->len, "NULL", 4);
            a->len += 4;
        }
        return;
    }
    size_t n = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++)
        extra += s[i] == '"' || s[i] == '\\';
    if (!pga_room(a, n + extra + 2))
        return;
    char *d = a->p + a->len;
    *d++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            *d++ = '\\';
        *d++ = s[i];
    }
    *d++ = '"';
    a->len = (size_t)(d - a->p);
}

void pga_i64(struct pg_array *a, int64_t v)
{
    pga_sep(a);
    if (pga_room(a, 24))
        a->len += (size_t)snprintf(a->p + a->len, 24, "%" PRId64, v);
}

const char *pga_done(struct pg_array *a)
{
    if (a->len == 0 && pga_room(a, 1))
        a->p[a->len++] = '{'; /* no element: "{}" */
    if (!pga_room(a, 1))
        return NULL;
    a->p[a->len++] = '}';
    a->p[a->len] = '\0';
    return a->p;
}

void pga_free(struct pg_array *a)
{
    free(a->p);
    pga_init(a);
}

void pgp_init(struct pg_params *p)
{
    p->n = 0;
}

void pgp_text(struct pg_params *p, const char *s)
{
    if (p->n < PG_MAX_PARAMS)
        p->v[p->n++] = s;
}

void pgp_i64(struct pg_params *p, int64_t v)
{
    if (p->n < PG_MAX_PARAMS) {
        snprintf(p->num[p->n], sizeof p->num[0], "%" PRId64, v);
        p->v[p->n] = p->num[p->n];
        p->n++;
    }
}

void pgp_bool(struct pg_params *p, bool v)
{
    pgp_text(p, v ? "t" : "f");
}

const char *pg_text(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
}

int64_t pg_i64(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? 0 : strtoll(PQgetvalue(res, r, c), NULL, 10);
}

bool pg_bool(const PGresult *res, int r, int c)
{
    return !PQgetisnull(res, r, c) && PQgetvalue(res, r, c)[0] == 't';
}

void pg_msg_from_row(const PGresult *res, int r, int c0, struct store_msg *m)
{
    m->id = pg_i64(res, r, c0);
    m->sender = pg_text(res, r, c0 + 1);
    m->to_user = pg_text(res, r, c0 + 2);
    m->room = pg_text(res, r, c0 + 3);
    m->body = pg_text(res, r, c0 + 4);
    m->cid = pg_text(res, r, c0 + 5);
    m->created_at = pg_i64(res, r, c0 + 6);
    m->via = pg_text(res, r, c0 + 7);
}

int pg_each_msg(const PGresult *res, int emit, store_msg_fn *cb, void *ctx)
{
    int n = PQntuples(res), stop;
    struct store_msg m;

    for (int r = 0; r < n && r < emit; r++) {
        pg_msg_from_row(res, r, 0, &m);
        if ((stop = cb(ctx, &m)) != 0)
            return stop;
    }
    return 0;
}

int pg_each_name(const PGresult *res, store_name_fn *cb, void *ctx)
{
    int n = PQntuples(res), stop;

    for (int r = 0; r < n; r++)
        if ((stop = cb(ctx, pg_text(res, r, 0))) != 0)
            return stop;
    return 0;
}

/* ---- Errors ---- */

int pg_failf(struct store_pg *pg, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(pg->err, sizeof pg->err, fmt, ap);
    va_end(ap);
    return code;
}

const char *pg_last_error(const struct store *st)
{
    return ((const struct store_pg *)(const void *)st)->err;
}

/* The text libpq gives, on one line. */
void pg_copy_msg(char *dst, size_t n, const char *msg)
{
    size_t i = 0;

    for (; msg && *msg && i + 1 < n; msg++)
        dst[i++] = (*msg == '\n' || *msg == '\t') ? ' ' : *msg;
    while (i > 0 && dst[i - 1] == ' ')
        i--;
    dst[i] = '\0';
}

static int map_sqlstate(const char *state)
{
    if (!state)
        return STORE_ERR_IO;
    if (!strncmp(state, "23", 2))
        return STORE_ERR_CONSTRAINT;
    if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03") ||
        !strcmp(state, "57014"))
        return STORE_ERR_BUSY;
    if (!strcmp(state, "25006"))
        return STORE_ERR_READONLY;
    if (!strcmp(state, "53100") || !strcmp(state, "53200"))
        return STORE_ERR_NOMEM;
    return STORE_ERR_IO;
}

/* ---- The connection ---- */

/* Give up the connection: what it had open is lost; calls fail at once for a while. */
static void pg_drop(struct store_pg *pg)
{
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->nprepared = 0;
    pg->outbox_owner = false; /* a session-level lock goes with its connection */
    pg->down_until_ms =
        pg_mono_ms() + (pg->async_reconnect ? PG_RETRY_MIN_MS : PG_DOWN_BACKOFF_MS);
    if (pg->txn)
        pg->txn_broken = true;
    PQclear(pg->commit_res);
    pg->commit_res = NULL;
    if (pg->commit_pending && !pg->commit_done) {
        /* The answer is lost with the connection: the COMMIT may or may not have happened. Report
         * a failure (no receipt goes out; clients resend with their cid, which is idempotent). */
        pg->commit_done = true;
        pg->commit_rc = STORE_ERR_IO;
        snprintf(pg->commit_err, sizeof pg->commit_err,
                 "commit: connection lost before the answer (%.400s)", pg->err);
    }
}

static void pg_commit_collect(struct store_pg *pg, enum store_poll how);

/* A call is about to use the connection: whatever else is half-way on it finishes first. */
static void pg_enter(struct store_pg *pg)
{
    if (pg->waiter.enter)
        pg->waiter.enter(pg->waiter.ctx);
}

/* Wait for the socket (POLLIN/POLLOUT) until deadline; 1 ready, 0 timed out, -1 error. */
static int pg_wait(struct store_pg *pg, short events, int64_t deadline)
{
    struct pollfd pfd = {.fd = PQsocket(pg->conn), .events = events};

    if (pg->waiter.wait) { /* the event loop's store fiber parks here (store_set_waiter) */
        int64_t left = deadline - pg_mono_ms();
        if (left <= 0)
            return 0;
        return pg->waiter.wait(pg->waiter.ctx, pfd.fd, events, (int)left);
    }

    for (;;) {
        int64_t left = deadline - pg_mono_ms();
        if (left <= 0)
            return 0;
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

PGconn *pg_connect_bounded(const char *conninfo, int wait_ms, char *err, size_t errlen)
{
    int64_t deadline = pg_mono_ms() + (wait_ms > 0 ? wait_ms : 5000);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *c = PQconnectStart(conninfo);

    if (!c) {
        snprintf(err, errlen, "postgresql: out of memory connecting");
        return NULL;
    }
    while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd pfd = {.fd = PQsocket(c),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int64_t left = deadline - pg_mono_ms();
        int n = left > 0 ? poll(&pfd, 1, (int)left) : 0;
        if (n == 0) {
            PQfinish(c);
            snprintf(err, errlen, "postgresql: no connection within %d ms", wait_ms);
            return NULL;
        }
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            st = PQconnectPoll(c);
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[400];
        pg_copy_msg(msg, sizeof msg, PQerrorMessage(c));
        PQfinish(c);
        snprintf(err, errlen, "postgresql: cannot connect: %s", msg);
        return NULL;
    }
    return c;
}

static PGresult *pg_await(struct store_pg *pg, int64_t deadline, bool *timed_out);

/* Set up a new connection (pg->conn): non-blocking, the session settings (bounded by the wait).
 * 0 or STORE_ERR_OPEN. */
static int pg_setup(struct store_pg *pg)
{
    char why[480];
    bool to = false;

    PQsetnonblocking(pg->conn, 1);
    pg->nprepared = 0;
    /* wsctl's handle can never write; server handles say who they are in pg_stat_activity. */
    const char *set = pg->readonly ? "SET default_transaction_read_only = on;"
                                     "SET client_min_messages = warning;"
                                     "SET application_name = 'wsctl'"
                                   : "SET client_min_messages = warning;"
                                     "SET application_name = 'wsproxy'";
    PGresult *r = NULL;
    if (PQsendQuery(pg->conn, set))
        r = pg_await(pg, pg_mono_ms() + (pg->wait_ms > 0 ? pg->wait_ms : 5000), &to);
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        pg_copy_msg(why, sizeof why, PQerrorMessage(pg->conn));
        PQfinish(pg->conn);
        pg->conn = NULL;
        return pg_failf(pg, STORE_ERR_OPEN, "postgresql: setting up the connection: %s", why);
    }
    return 0;
}

/* Connect (a new connection, bounded by wait_ms), set it up. 0 or STORE_ERR_*. */
static int pg_connect(struct store_pg *pg)
{
    char why[480];

    if (!(pg->conn = pg_connect_bounded(pg->conninfo, pg->wait_ms, why, sizeof why)))
        return pg_failf(pg, STORE_ERR_OPEN, "%s", why);
    return pg_setup(pg);
}

/* A reconnect attempt failed: the next one waits longer (up to PG_RETRY_MAX_MS). */
static void retry_later(struct store_pg *pg)
{
    if (pg->connecting)
        PQfinish(pg->connecting);
    pg->connecting = NULL;
    pg->retry_ms = pg->retry_ms ? pg->retry_ms * 2 : PG_RETRY_MIN_MS;
    if (pg->retry_ms > PG_RETRY_MAX_MS)
        pg->retry_ms = PG_RETRY_MAX_MS;
    pg->down_until_ms = pg_mono_ms() + pg->retry_ms;
}

/*
 * The loop's reconnect: start libpq's connect, or move it on by what the socket allows now (a
 * poll() that does not wait). 0 once connected and set up; STORE_ERR_IO while under way or after
 * it failed (calls fail at once meanwhile: the loop never waits for a database that is away).
 */
static int pg_reconnect_step(struct store_pg *pg, const char *what)
{
    int64_t now = pg_mono_ms();

    if (!pg->connecting) {
        if (now < pg->down_until_ms)
            return pg_failf(pg, STORE_ERR_IO, "%s: postgresql is unreachable (reconnecting)", what);
        pg->connecting = PQconnectStart(pg->conninfo);
        pg->cpoll = PGRES_POLLING_WRITING;
        pg->connect_deadline = now + (pg->wait_ms > 0 ? pg->wait_ms : 5000);
        if (!pg->connecting || PQstatus(pg->connecting) == CONNECTION_BAD) {
            retry_later(pg);
            return pg_failf(pg, STORE_ERR_IO, "%s: postgresql: cannot start connecting", what);
        }
    }
    for (int steps = 0; steps < 16; steps++) {
        if (pg->cpoll == PGRES_POLLING_OK)
            break;
        if (pg->cpoll == PGRES_POLLING_FAILED) {
            char msg[400];
            pg_copy_msg(msg, sizeof msg, PQerrorMessage(pg->connecting));
            retry_later(pg);
            return pg_failf(pg, STORE_ERR_IO, "%s: postgresql: cannot connect: %s", what, msg);
        }
        struct pollfd pfd = {.fd = PQsocket(pg->connecting),
                             .events = pg->cpoll == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (poll(&pfd, 1, 0) <= 0)
            break; /* not ready: on with the next call */
        pg->cpoll = PQconnectPoll(pg->connecting);
    }
    if (pg->cpoll != PGRES_POLLING_OK) {
        if (now >= pg->connect_deadline) {
            retry_later(pg);
            return pg_failf(pg, STORE_ERR_IO, "%s: postgresql: no connection within %d ms", what,
                            pg->wait_ms);
        }
        return pg_failf(pg, STORE_ERR_IO, "%s: postgresql is unreachable (reconnecting)", what);
    }
    pg->conn = pg->connecting;
    pg->connecting = NULL;
    int rc = pg_setup(pg); /* a SET answered by a server that just answered the handshake */
    if (rc < 0) {
        retry_later(pg);
        return STORE_ERR_IO;
    }
    pg->retry_ms = 0;
    return 0;
}

/* A usable connection: the current one, or a new one when the back-off allows. */
static int pg_ensure(struct store_pg *pg, const char *what)
{
    int rc;

    if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
        return 0;
    if (pg->conn)
        pg_drop(pg);
    if (pg->async_reconnect)
        return pg_reconnect_step(pg, what);
    if (pg_mono_ms() < pg->down_until_ms)
        return pg_failf(pg, STORE_ERR_IO, "%s: postgresql is unreachable (retrying)", what);
    if ((rc = pg_connect(pg)) < 0) {
        pg->down_until_ms = pg_mono_ms() + PG_DOWN_BACKOFF_MS;
        return rc == STORE_ERR_OPEN ? STORE_ERR_IO : rc;
    }
    return 0;
}

/* Send what libpq has queued, then collect the one result of the command sent. */
static PGresult *pg_await(struct store_pg *pg, int64_t deadline, bool *timed_out)
{
    PGresult *last = NULL, *r;
    int f;

    *timed_out = false;
    while ((f = PQflush(pg->conn)) == 1) {
        int w = pg_wait(pg, POLLOUT | POLLIN, deadline);
        if (w <= 0) {
            *timed_out = w == 0;
            return NULL;
        }
        if (!PQconsumeInput(pg->conn))
            return NULL;
    }
    if (f < 0)
        return NULL;
    for (;;) {
        while (PQisBusy(pg->conn)) {
            int w = pg_wait(pg, POLLIN, deadline);
            if (w <= 0) {
                *timed_out = w == 0;
                PQclear(last);
                return NULL;
            }
            if (!PQconsumeInput(pg->conn)) {
                PQclear(last);
                return NULL;
            }
        }
        r = PQgetResult(pg->conn);
        if (!r)
            break;
        /* One command, one result; keep the first error if any came. */
        if (last && PQresultStatus(last) == PGRES_FATAL_ERROR)
            PQclear(r);
        else {
            PQclear(last);
            last = r;
        }
    }
    return last;
}

static int pg_stmt_index(struct store_pg *pg, const char *sql, const char *what)
{
    for (int i = 0; i < pg->nprepared; i++)
        if (pg->prepared[i] == sql)
            return i;
    if (pg->nprepared >= PG_MAX_STMTS)
        return pg_failf(pg, STORE_ERR_IO, "%s: too many statements (raise PG_MAX_STMTS)", what);
    int i = pg->nprepared;
    char name[16];
    bool to;
    snprintf(name, sizeof name, "s%d", i);
    int64_t deadline = pg_mono_ms() + (pg->wait_ms > 0 ? pg->wait_ms : 5000);
    if (!PQsendPrepare(pg->conn, name, sql, 0, NULL)) {
        char msg[400];
        pg_copy_msg(msg, sizeof msg, PQerrorMessage(pg->conn));
        pg_drop(pg);
        return pg_failf(pg, STORE_ERR_IO, "%s: %s", what, msg);
    }
    PGresult *r = pg_await(pg, deadline, &to);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        char msg[400];
        int code = r ? map_sqlstate(PQresultErrorField(r, PG_DIAG_SQLSTATE)) : STORE_ERR_IO;
        pg_copy_msg(msg, sizeof msg,
                    r ? PQresultErrorMessage(r)
                      : (to ? "no answer in time" : PQerrorMessage(pg->conn)));
        PQclear(r);
        if (!r)
            pg_drop(pg);
        else if (pg->txn)
            pg->txn_broken = true;
        return pg_failf(pg, code, "%s (prepare): %s", what, msg);
    }
    PQclear(r);
    pg->prepared[i] = sql;
    pg->nprepared++;
    return i;
}

int pg_run(struct store_pg *pg, const char *sql, const struct pg_params *p, PGresult **res,
           const char *what)
{
    int rc, idx;
    bool to;

    if (res)
        *res = NULL;
    pg_enter(pg);
    if (pg->commit_pending && !pg->commit_done)
        pg_commit_collect(pg, STORE_POLL_WAIT); /* one command at a time on a connection */
    if ((rc = pg_ensure(pg, what)) < 0)
        return rc;
    if (pg->txn && pg->txn_broken)
        return pg_failf(pg, STORE_ERR_IO,
                        "%s: the transaction was aborted after an earlier error; store_rollback it",
                        what);
    if ((idx = pg_stmt_index(pg, sql, what)) < 0)
        return idx;
    char name[16];
    snprintf(name, sizeof name, "s%d", idx);
    int64_t deadline = pg_mono_ms() + (pg->wait_ms > 0 ? pg->wait_ms : 5000);
    if (!PQsendQueryPrepared(pg->conn, name, p ? p->n : 0, p ? p->v : NULL, NULL, NULL, 0)) {
        char msg[400];
        pg_copy_msg(msg, sizeof msg, PQerrorMessage(pg->conn));
        pg_drop(pg);
        return pg_failf(pg, STORE_ERR_IO, "%s: %s", what, msg);
    }
    PGresult *r = pg_await(pg, deadline, &to);
    if (!r) {
        char msg[400];
        pg_copy_msg(msg, sizeof msg, to ? "" : PQerrorMessage(pg->conn));
        pg_drop(pg);
        if (to)
            return pg_failf(pg, STORE_ERR_BUSY, "%s: postgresql gave no answer within %d ms",
                            what, pg->wait_ms);
        return pg_failf(pg, STORE_ERR_IO, "%s: connection lost: %s", what, msg);
    }
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        char msg[400];
        int code = map_sqlstate(PQresultErrorField(r, PG_DIAG_SQLSTATE));
        pg_copy_msg(msg, sizeof msg, PQresultErrorMessage(r));
        PQclear(r);
        if (pg->txn)
            pg->txn_broken = true;
        return pg_failf(pg, code, "%s: %s", what, msg);
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return 0;
}

int pg_write_check(struct store_pg *pg)
{
    if (pg->readonly)
        return pg_failf(pg, STORE_ERR_READONLY, "write on a read-only store");
    if (pg->txn && pg->txn_broken)
        return pg_failf(pg, STORE_ERR_IO,
                        "the transaction was aborted after an earlier error; store_rollback it");
    return 0;
}

int pg_write(struct store_pg *pg, const char *sql, const struct pg_params *p, int64_t *changed,
             const char *what)
{
    PGresult *r;
    int rc;

    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    if ((rc = pg_run(pg, sql, p, &r, what)) < 0)
        return rc;
    if (changed) {
        const char *t = PQcmdTuples(r);
        *changed = (t && *t) ? strtoll(t, NULL, 10) : 0;
    }
    PQclear(r);
    return 0;
}

/* ---- Transactions ---- */

static const char SQL_BEGIN[] = "BEGIN";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";
static const char SQL_SAVEPOINT[] = "SAVEPOINT store_atomic";
static const char SQL_RELEASE[] = "RELEASE SAVEPOINT store_atomic";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO SAVEPOINT store_atomic";

void pg_set_waiter(struct store *st, const struct store_waiter *w)
{
    struct store_pg *pg = pg_of(st);

    if (w)
        pg->waiter = *w;
    else
        memset(&pg->waiter, 0, sizeof pg->waiter);
}

void pg_set_lock_wait(struct store *st, int ms)
{
    struct store_pg *pg = pg_of(st);

    pg->wait_ms = ms > 0 ? ms : 0;
    pg->async_reconnect = true; /* the event loop's handle: never wait to reconnect */
}

/* The transaction is over, kept or not: what it noted in memory goes with it. */
static void pg_txn_over(struct store_pg *pg)
{
    pg->txn = false;
    pg->txn_broken = false;
    pg->savepoints = 0;
    pg_conv_drop(pg);
    pg_log_drop(pg, 0);
    pg_outbox_txn_over(pg);
}

/* What the transaction noted in memory is part of it: written right before its COMMIT. */
static int pg_flush_noted(struct store_pg *pg)
{
    int rc = pg_conv_flush(pg);
    return rc < 0 ? rc : pg_log_flush(pg);
}

/* A flush before COMMIT failed: the contract is that a failed commit stored nothing, so roll the
 * transaction back (keeping the flush's error) rather than commit it without those rows. */
static int pg_commit_abort(struct store_pg *pg, int rc)
{
    char keep[sizeof pg->err];

    memcpy(keep, pg->err, sizeof keep);
    pg->txn_broken = false; /* lets the ROLLBACK through */
    if (pg->conn)
        pg_run(pg, SQL_ROLLBACK, NULL, NULL, "rollback");
    pg_txn_over(pg);
    memcpy(pg->err, keep, sizeof keep);
    return rc;
}

int pg_begin(struct store *st)
{
    struct store_pg *pg = pg_of(st);
    int rc;

    if (pg->readonly)
        return pg_failf(pg, STORE_ERR_READONLY, "begin on a read-only store");
    if (pg->txn)
        return pg_failf(pg, STORE_ERR_MISUSE, "store_begin: a transaction is already open");
    if ((rc = pg_run(pg, SQL_BEGIN, NULL, NULL, "begin")) < 0)
        return rc;
    pg->txn = true;
    pg->txn_broken = false;
    return 0;
}

int pg_commit(struct store *st)
{
    struct store_pg *pg = pg_of(st);
    int rc;

    if (!pg->txn)
        return pg_failf(pg, STORE_ERR_MISUSE, "store_commit: no transaction is open");
    if (pg->txn_broken) {
        char keep[sizeof pg->err];
        memcpy(keep, pg->err, sizeof keep);
        pg->txn_broken = false; /* lets the ROLLBACK through */
        if (pg->conn)
            pg_run(pg, SQL_ROLLBACK, NULL, NULL, "rollback");
        pg_txn_over(pg);
        return pg_failf(pg, STORE_ERR_IO, "commit: the transaction was aborted after an error (%s)",
                        keep);
    }
    if ((rc = pg_flush_noted(pg)) < 0)
        return pg_commit_abort(pg, rc);
    rc = pg_run(pg, SQL_COMMIT, NULL, NULL, "commit");
    /* A failed COMMIT ends the transaction in PostgreSQL (rolled back); a lost connection too. */
    pg_txn_over(pg);
    return rc;
}

/* The COMMIT's outcome from its result(s): 0 or STORE_ERR_* with pg->commit_err. */
static void commit_outcome(struct store_pg *pg, PGresult *r, const char *lost)
{
    pg->commit_done = true;
    if (r && PQresultStatus(r) == PGRES_COMMAND_OK) {
        pg->commit_rc = 0;
        pg->commit_err[0] = '\0';
        return;
    }
    char msg[400];
    pg_copy_msg(msg, sizeof msg, r ? PQresultErrorMessage(r) : lost);
    pg->commit_rc = r ? map_sqlstate(PQresultErrorField(r, PG_DIAG_SQLSTATE)) : STORE_ERR_IO;
    snprintf(pg->commit_err, sizeof pg->commit_err, "commit: %s", msg);
}

/*
 * Read the answer of the COMMIT on its way. NOW: what has arrived (the answer may not be complete:
 * a result read is kept in commit_res until libpq's end of command); WAIT: until it is in or its
 * deadline passed; EXPIRED: its time is up. A lost or late answer drops the connection (pg_drop
 * records the failure).
 */
static void pg_commit_collect(struct store_pg *pg, enum store_poll how)
{
    PGresult *r;

    if (!pg->commit_pending || pg->commit_done)
        return;
    if (how == STORE_POLL_WAIT) {
        bool to;
        r = pg_await(pg, pg->commit_deadline, &to);
        if (!r && !pg->commit_res) {
            pg_failf(pg, STORE_ERR_IO, "%s", to ? "no answer in time" : PQerrorMessage(pg->conn));
            PQclear(pg->commit_res);
            pg->commit_res = NULL;
            pg_drop(pg);
            return;
        }
        commit_outcome(pg, r ? r : pg->commit_res, NULL);
        PQclear(r);
        PQclear(pg->commit_res);
        pg->commit_res = NULL;
        return;
    }
    if (how == STORE_POLL_EXPIRED || pg_mono_ms() >= pg->commit_deadline || !pg->conn) {
        pg_failf(pg, STORE_ERR_BUSY, "postgresql gave no answer to COMMIT within %d ms",
                 pg->wait_ms);
        PQclear(pg->commit_res);
        pg->commit_res = NULL;
        pg_drop(pg);
        return;
    }
    if (!PQconsumeInput(pg->conn)) {
        pg_failf(pg, STORE_ERR_IO, "%s", PQerrorMessage(pg->conn));
        PQclear(pg->commit_res);
        pg->commit_res = NULL;
        pg_drop(pg);
        return;
    }
    while (!PQisBusy(pg->conn)) {
        if (!(r = PQgetResult(pg->conn))) { /* the end of the command: the answer is complete */
            commit_outcome(pg, pg->commit_res, "no result");
            PQclear(pg->commit_res);
            pg->commit_res = NULL;
            return;
        }
        if (pg->commit_res && PQresultStatus(pg->commit_res) == PGRES_FATAL_ERROR)
            PQclear(r); /* keep the first error */
        else {
            PQclear(pg->commit_res);
            pg->commit_res = r;
        }
    }
}

int pg_commit_start(struct store *st, int *fd)
{
    struct store_pg *pg = pg_of(st);

    int rc;

    *fd = -1;
    pg_enter(pg);
    if (!pg->txn || pg->txn_broken || !pg->conn)
        return pg_commit(st); /* the errors and the rollback of the synchronous path */
    /* Synchronous: a few round trips per group commit, and only the COMMIT's fsync is waited for
     * without blocking the loop. */
    if ((rc = pg_flush_noted(pg)) < 0)
        return pg_commit_abort(pg, rc);
    if (!PQsendQuery(pg->conn, SQL_COMMIT)) {
        pg_failf(pg, STORE_ERR_IO, "commit: %s", PQerrorMessage(pg->conn));
        pg_drop(pg);
        pg_txn_over(pg);
        return STORE_ERR_IO;
    }
    pg_txn_over(pg);
    pg->commit_pending = true;
    pg->commit_done = false;
    pg->commit_deadline = pg_mono_ms() + (pg->wait_ms > 0 ? pg->wait_ms : 5000);
    int f = PQflush(pg->conn);
    if (f != 0) {
        /* Could not hand it all to the socket (or an error): finish here rather than also
         * watching for writability. */
        bool done;
        return pg_commit_poll(st, STORE_POLL_WAIT, &done);
    }
    *fd = PQsocket(pg->conn);
    return 1;
}

int pg_commit_poll(struct store *st, enum store_poll how, bool *done)
{
    struct store_pg *pg = pg_of(st);

    *done = true;
    if (!pg->commit_pending)
        return 0;
    pg_enter(pg);
    pg_commit_collect(pg, how);
    if (!pg->commit_done) {
        *done = false;
        return 0;
    }
    pg->commit_pending = false;
    pg->commit_done = false;
    if (pg->commit_rc != 0)
        snprintf(pg->err, sizeof pg->err, "%s", pg->commit_err);
    return pg->commit_rc;
}

int pg_rollback(struct store *st)
{
    struct store_pg *pg = pg_of(st);
    int rc = 0;

    if (pg->txn && pg->conn) {
        pg->txn_broken = false;
        rc = pg_run(pg, SQL_ROLLBACK, NULL, NULL, "rollback");
    }
    pg_txn_over(pg);
    return rc;
}

bool pg_in_transaction(const struct store *st)
{
    return ((const struct store_pg *)(const void *)st)->txn;
}

int pg_atomic_begin(struct store *st, bool *own_txn)
{
    struct store_pg *pg = pg_of(st);
    int rc;

    if ((rc = pg_write_check(pg)) < 0)
        return rc;
    *own_txn = !pg->txn;
    if (*own_txn) {
        if ((rc = pg_run(pg, SQL_BEGIN, NULL, NULL, "begin")) < 0)
            return rc;
        pg->txn = true;
        pg->txn_broken = false;
        return 0;
    }
    /* Touches noted before the savepoint are written before it, so a ROLLBACK TO cannot undo them
     * (their messages stay); inside it, touches are written with their messages. Cluster notes stay
     * in memory: the savepoint remembers how many there were. */
    if ((rc = pg_conv_flush(pg)) < 0 || (rc = pg_log_savepoint(pg)) < 0)
        return rc;
    if ((rc = pg_run(pg, SQL_SAVEPOINT, NULL, NULL, "savepoint")) < 0)
        return rc;
    pg->savepoints++;
    return 0;
}

int pg_atomic_end(struct store *st, bool own_txn, int rc)
{
    struct store_pg *pg = pg_of(st);
    char keep[sizeof pg->err];
    int rc2;

    if (own_txn) {
        if (rc == 0)
            return pg_commit(st);
        memcpy(keep, pg->err, sizeof keep);
        pg_rollback(st);
        memcpy(pg->err, keep, sizeof keep);
        return rc;
    }
    if (pg->savepoints > 0) {
        pg->savepoints--;
        pg_log_savepoint_end(pg, rc != 0);
    }
    if (rc == 0) {
        if ((rc2 = pg_run(pg, SQL_RELEASE, NULL, NULL, "release savepoint")) < 0)
            return rc2;
        return 0;
    }
    /* Undo the savepoint's writes; that also un-aborts the transaction PostgreSQL aborted. */
    memcpy(keep, pg->err, sizeof keep);
    pg->txn_broken = false;
    if (pg_run(pg, SQL_ROLLBACK_TO, NULL, NULL, "rollback to savepoint") == 0)
        pg_run(pg, SQL_RELEASE, NULL, NULL, "release savepoint");
    memcpy(pg->err, keep, sizeof keep);
    return rc;
}

/* ---- Health, stats ---- */

static const char SQL_PING[] = "SELECT 1";
static const char SQL_STATS[] =
    "SELECT (SELECT count(*) FROM sessions WHERE ended_at IS NULL),"
    " (SELECT count(*) FROM sessions),"
    " (SELECT count(*) FROM presence WHERE state = 'online'),"
    " (SELECT count(*) FROM messages),"
    " (SELECT count(*) FROM messages WHERE to_user IS NOT NULL AND delivered_at IS NULL),"
    " (SELECT count(DISTINCT room) FROM room_members)";

int pg_ping(struct store *st)
{
    return pg_run(pg_of(st), SQL_PING, NULL, NULL, "ping");
}

int pg_stats(struct store *st, struct store_stats *out)
{
    PGresult *r;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = pg_run(pg_of(st), SQL_STATS, NULL, &r, "stats")) < 0)
        return rc;
    out->sessions_active = pg_i64(r, 0, 0);
    out->sessions_total = pg_i64(r, 0, 1);
    out->users_online = pg_i64(r, 0, 2);
    out->messages = pg_i64(r, 0, 3);
    out->pending_direct = pg_i64(r, 0, 4);
    out->rooms = pg_i64(r, 0, 5);
    PQclear(r);
    return 0;
}

void pg_wal_stats(struct store *st, struct store_wal_stats *out)
{
    (void)st;
    memset(out, 0, sizeof *out); /* PostgreSQL checkpoints on its own: nothing of ours runs */
}

int pg_backup(struct store *st, const char *dest_path, int64_t *pages)
{
    (void)dest_path;
    if (pages)
        *pages = 0;
    return pg_failf(pg_of(st), STORE_ERR_INVALID,
                    "backup: the store is PostgreSQL; use pg_dump (or pg_basebackup) instead");
}

int pg_check_plans(struct store *st)
{
    /* PostgreSQL plans by statistics that change with the data: a plan taken on an empty database
     * says nothing. The indexes mirror the SQLite schema, whose plans are checked. */
    (void)st;
    return 0;
}

int pg_schema_version(const struct store *st)
{
    return ((const struct store_pg *)(const void *)st)->schema_version;
}

/* ---- Migrations ---- */

/* A statement outside the prepared-statement path (DDL, migrations), bounded like the rest. */
static int pg_exec_plain(struct store_pg *pg, const char *sql, PGresult **res, const char *what)
{
    bool to;
    int64_t deadline = pg_mono_ms() + (pg->wait_ms > 0 ? pg->wait_ms : 5000) + 60000;

    if (res)
        *res = NULL;
    if (!PQsendQuery(pg->conn, sql))
        return pg_failf(pg, STORE_ERR_IO, "%s: %s", what, PQerrorMessage(pg->conn));
    PGresult *r = pg_await(pg, deadline, &to);
    if (!r || (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)) {
        char msg[400];
        pg_copy_msg(msg, sizeof msg, r ? PQresultErrorMessage(r) : PQerrorMessage(pg->conn));
        int code = r ? map_sqlstate(PQresultErrorField(r, PG_DIAG_SQLSTATE)) : STORE_ERR_IO;
        PQclear(r);
        return pg_failf(pg, code == STORE_ERR_CONSTRAINT ? STORE_ERR_SCHEMA : code, "%s: %s",
                        what, msg);
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return 0;
}

static int pg_read_version(struct store_pg *pg, int *version)
{
    PGresult *r;
    int rc;

    *version = 0;
    if ((rc = pg_exec_plain(pg, "SELECT to_regclass('wsp_schema') IS NOT NULL", &r,
                            "schema version")) < 0)
        return rc;
    bool have = pg_bool(r, 0, 0);
    PQclear(r);
    if (!have)
        return 0;
    if ((rc = pg_exec_plain(pg, "SELECT coalesce(max(version), 0) FROM wsp_schema", &r,
                            "schema version")) < 0)
        return rc;
    *version = (int)pg_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

static int pg_migrate(struct store_pg *pg)
{
    char sql[160];
    int rc, version, latest = store_schema_latest();

    /* Nodes starting together take turns; the second one finds the work done. */
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%" PRId64 ")", PG_MIGRATE_LOCK);
    if ((rc = pg_exec_plain(pg, sql, NULL, "migrate: lock")) < 0)
        return rc;
    if ((rc = pg_read_version(pg, &version)) < 0)
        goto out;
    if (version > latest) {
        rc = pg_failf(pg, STORE_ERR_SCHEMA,
                      "database schema version %d is newer than this wsproxy (knows up to %d); "
                      "upgrade wsproxy",
                      version, latest);
        goto out;
    }
    for (size_t i = 0; i < wsp_num_pg_migrations; i++) {
        const struct migration *m = &wsp_pg_migrations[i];
        if (m->version <= version)
            continue;
        if ((rc = pg_exec_plain(pg, "BEGIN", NULL, "migrate")) < 0)
            goto out;
        rc = pg_exec_plain(pg,
                           "CREATE TABLE IF NOT EXISTS wsp_schema (version int PRIMARY KEY,"
                           " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                           NULL, "migrate");
        if (rc == 0 && (rc = pg_exec_plain(pg, m->sql, NULL, m->name)) == 0) {
            snprintf(sql, sizeof sql, "INSERT INTO wsp_schema (version, name) VALUES (%d, '%s')",
                     m->version, m->name);
            if ((rc = pg_exec_plain(pg, sql, NULL, "migrate")) == 0)
                rc = pg_exec_plain(pg, "COMMIT", NULL, "migrate");
        }
        if (rc < 0) {
            char keep[sizeof pg->err];
            memcpy(keep, pg->err, sizeof keep);
            pg_exec_plain(pg, "ROLLBACK", NULL, "migrate");
            rc = pg_failf(pg, STORE_ERR_SCHEMA, "migration %s failed: %s", m->name, keep);
            goto out;
        }
        version = m->version;
    }
    if (version != latest)
        rc = pg_failf(pg, STORE_ERR_SCHEMA,
                      "schema version %d after migrations, but this wsproxy knows %d: a migration "
                      "lacks its PostgreSQL twin",
                      version, latest);
    pg->schema_version = version;
out:
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%" PRId64 ")", PG_MIGRATE_LOCK);
    if (pg->conn)
        pg_exec_plain(pg, sql, NULL, "migrate: unlock");
    return rc;
}

/* ---- Open, close ---- */

int pg_open(struct store **out, const char *conninfo, const struct store_opts *opts, char *err,
            size_t errlen)
{
    struct store_pg *pg;
    int rc;

    *out = NULL;
    if (!conninfo || !*conninfo) {
        if (err && errlen)
            snprintf(err, errlen, "no PostgreSQL connection string given");
        return STORE_ERR_INVALID;
    }
    if (!(pg = calloc(1, sizeof *pg)) || !(pg->conninfo = strdup(conninfo))) {
        free(pg);
        if (err && errlen)
            snprintf(err, errlen, "out of memory opening the PostgreSQL store");
        return STORE_ERR_NOMEM;
    }
    pg->ops = &store_pg_ops;
    pg->readonly = opts->readonly;
    pg->wait_ms = opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : 5000;
    if ((rc = pg_connect(pg)) < 0)
        goto fail;
    if (pg->readonly) {
        int version;
        if ((rc = pg_read_version(pg, &version)) < 0)
            goto fail;
        if (version != store_schema_latest()) {
            rc = pg_failf(pg, STORE_ERR_SCHEMA,
                          "database schema version %d, but this wsproxy needs %d (start the "
                          "server once to migrate)",
                          version, store_schema_latest());
            goto fail;
        }
        pg->schema_version = version;
    } else if ((rc = pg_migrate(pg)) < 0) {
        goto fail;
    }
    *out = (struct store *)(void *)pg;
    return 0;
fail:
    if (err && errlen)
        snprintf(err, errlen, "%s", pg->err);
    pg_close((struct store *)(void *)pg);
    return rc;
}

void pg_close(struct store *st)
{
    struct store_pg *pg = pg_of(st);

    PQclear(pg->commit_res);
    if (pg->conn)
        PQfinish(pg->conn); /* an open transaction is rolled back by the server */
    if (pg->connecting)
        PQfinish(pg->connecting);
    pg_conv_drop(pg);     /* ... and what it noted in memory with it */
    pg_log_drop(pg, 0);
    free(pg->notes);
    free(pg->note_marks);
    free(pg->conninfo);
    free(pg->ret_room);
    free(pg->ret_dm_user);
    free(pg->ret_dm_peer);
    free(pg);
}

/* The PostgreSQL backend's table (store_ops.h). */
const struct store_ops store_pg_ops = {
    .name = "postgresql",
    .set_lock_wait = pg_set_lock_wait,
    .set_waiter = pg_set_waiter,
    .close = pg_close,
    .last_error = pg_last_error,
    .schema_version = pg_schema_version,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .in_transaction = pg_in_transaction,
    .ping = pg_ping,
    .backup = pg_backup,
    .stats = pg_stats,
    .wal_stats = pg_wal_stats,
    .check_plans = pg_check_plans,
    .session_begin = pg_session_begin,
    .session_touch = pg_session_touch,
    .session_end = pg_session_end,
    .session_end_orphans = pg_session_end_orphans,
    .session_get = pg_session_get,
    .session_list = pg_session_list,
    .session_count_active = pg_session_count_active,
    .presence_set = pg_presence_set,
    .presence_get = pg_presence_get,
    .msg_insert = pg_msg_insert,
    .msg_ack = pg_msg_ack,
    .msg_ack_first = pg_msg_ack_first,
    .pending_direct = pg_pending_direct,
    .history_direct = pg_history_direct,
    .history_room = pg_history_room,
    .msg_get = pg_msg_get,
    .room_join = pg_room_join,
    .room_join_via = pg_room_join_via,
    .room_add = pg_room_add,
    .room_member_via = pg_room_member_via,
    .room_delete = pg_room_delete,
    .rooms_list = pg_rooms_list,
    .room_member_count = pg_room_member_count,
    .user_conversations = pg_user_conversations,
    .retention_step = pg_retention_step,
    .user_erase = pg_user_erase,
    .atomic_begin = pg_atomic_begin,
    .atomic_end = pg_atomic_end,
    .msg_delete = pg_msg_delete,
    .room_leave = pg_room_leave,
    .room_is_member = pg_room_is_member,
    .room_cursor = pg_room_cursor,
    .room_members = pg_room_members,
    .user_rooms = pg_user_rooms,
    .users_sharing_room = pg_users_sharing_room,
    .room_replay = pg_room_replay,
    .outbox_add = pg_outbox_add,
    .outbox_scan = pg_outbox_scan,
    .outbox_scan_after = pg_outbox_scan_after,
    .outbox_replays = pg_outbox_replays,
    .outbox_delivered = pg_outbox_delivered,
    .outbox_retry = pg_outbox_retry,
    .outbox_expire = pg_outbox_expire,
    .outbox_dead_list = pg_outbox_dead_list,
    .outbox_replay = pg_outbox_replay,
    .outbox_counts = pg_outbox_counts,
    .node_join = pg_node_join,
    .node_renew = pg_node_renew,
    .node_leave = pg_node_leave,
    .node_sweep = pg_node_sweep,
    .nodes_list = pg_nodes_list,
    .cluster_note = pg_cluster_note,
    .outbox_owner = pg_outbox_owner,
    .commit_start = pg_commit_start,
    .commit_poll = pg_commit_poll,
};
