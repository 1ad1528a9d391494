/*
 * store_pg_listen.c -- the listening side of cluster mode: a connection of its own that LISTENs on
 * wsp_cluster and reads the cluster log without ever blocking (libpq's asynchronous calls; the
 * caller polls the socket from its event loop). The notification is only a doorbell: rows are read
 * from the table in (tx, id) order from the last one seen, and never past the oldest transaction
 * still running, so a row that commits late behind a smaller id is read when it commits, and a
 * notification lost with a broken connection costs nothing but the time to the next fetch.
 */
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_internal.h"

/* Rows per fetch; a full page fetches again at once. */
#define LISTEN_PAGE 500

struct store_listen {
    PGconn *conn;
    /* A reconnect under way, without waiting: libpq's connect state machine, then the LISTEN. */
    enum { L_READY, L_CONNECTING, L_LISTENING } state;
    PostgresPollingStatusType cpoll;
    int64_t deadline; /* monotonic: the reconnect is given up then */
    char *conninfo;
    int wait_ms;
    char tx[32];  /* the last row read: (tx, id) */
    int64_t id;
    bool fetching; /* a fetch is in flight */
    bool again;    /* fetch again when it is answered */
    int rows;      /* rows of the fetch in flight so far */
};

static const char SQL_FETCH[] =
    "SELECT l.tx::text, l.id, l.node, l.kind, l.target, l.ref, l.payload,"
    " m.id, m.sender, m.to_user, m.room, m.body, m.cid, m.created_at, m.via"
    " FROM cluster_log l LEFT JOIN messages m"
    "  ON l.kind = 'msg' AND m.id = l.ref AND m.deleted_at IS NULL"
    " WHERE (l.tx, l.id) > ($1::xid8, $2::bigint)"
    "  AND l.tx < pg_snapshot_xmin(pg_current_snapshot())"
    " ORDER BY l.tx, l.id LIMIT 500";

static int setup(struct store_listen *l, bool start_at_end, char *err, size_t errlen)
{
    char why[480];
    PGresult *r;

    if (!(l->conn = pg_connect_bounded(l->conninfo, l->wait_ms, why, sizeof why))) {
        snprintf(err, errlen, "cluster listener: %s", why);
        return STORE_ERR_IO;
    }
    /* Blocking, once per connection: LISTEN first, so nothing committed after the start point
     * can ring unheard. */
    r = PQexec(l->conn, "SET application_name = 'wsproxy-listen'; LISTEN wsp_cluster");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (ok && start_at_end) {
        r = PQexec(l->conn, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text");
        ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        if (ok) {
            snprintf(l->tx, sizeof l->tx, "%s", PQgetvalue(r, 0, 0));
            l->id = 0;
        }
        PQclear(r);
    }
    if (!ok || PQsetnonblocking(l->conn, 1) != 0) {
        pg_copy_msg(why, sizeof why, PQerrorMessage(l->conn));
        snprintf(err, errlen, "cluster listener: %s", why);
        PQfinish(l->conn);
        l->conn = NULL;
        return STORE_ERR_IO;
    }
    l->fetching = false;
    l->again = true; /* catch up at once: what committed while no one listened */
    return 0;
}

int store_listen_open(struct store_listen **out, const char *conninfo, int wait_ms, char *err,
                      size_t errlen)
{
    struct store_listen *l = calloc(1, sizeof *l);
    int rc;

    *out = NULL;
    if (!l || !(l->conninfo = strdup(conninfo))) {
        free(l);
        snprintf(err, errlen, "cluster listener: out of memory");
        return STORE_ERR_NOMEM;
    }
    l->wait_ms = wait_ms;
    if ((rc = setup(l, true, err, errlen)) < 0) {
        store_listen_close(l);
        return rc;
    }
    *out = l;
    return 0;
}

int store_listen_reconnect(struct store_listen *l, char *err, size_t errlen)
{
    if (l->conn)
        PQfinish(l->conn);
    l->conn = PQconnectStart(l->conninfo);
    if (!l->conn || PQstatus(l->conn) == CONNECTION_BAD) {
        snprintf(err, errlen, "cluster listener: cannot start connecting: %s",
                 l->conn ? PQerrorMessage(l->conn) : "out of memory");
        if (l->conn)
            PQfinish(l->conn);
        l->conn = NULL;
        return STORE_ERR_IO;
    }
    /* Moved on by store_listen_pump, which never waits; the old position is kept. */
    l->state = L_CONNECTING;
    l->cpoll = PGRES_POLLING_WRITING;
    l->deadline = pg_mono_ms() + (l->wait_ms > 0 ? l->wait_ms : 5000);
    l->fetching = false;
    return 0;
}

/* A reconnect's next steps, as far as the socket allows now. 0 (on its way or ready), or
 * STORE_ERR_IO when it failed (the caller starts another later). */
static int reconnect_step(struct store_listen *l)
{
    if (pg_mono_ms() >= l->deadline)
        return STORE_ERR_IO;
    while (l->state == L_CONNECTING) {
        if (l->cpoll == PGRES_POLLING_FAILED)
            return STORE_ERR_IO;
        if (l->cpoll == PGRES_POLLING_OK) {
            if (PQsetnonblocking(l->conn, 1) != 0 ||
                !PQsendQuery(l->conn, "SET application_name = 'wsproxy-listen'; LISTEN wsp_cluster"))
                return STORE_ERR_IO;
            l->state = L_LISTENING;
            break;
        }
        struct pollfd pfd = {.fd = PQsocket(l->conn),
                             .events = l->cpoll == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (poll(&pfd, 1, 0) <= 0)
            return 0;
        l->cpoll = PQconnectPoll(l->conn);
    }
    if (PQflush(l->conn) < 0 || !PQconsumeInput(l->conn))
        return STORE_ERR_IO;
    PGresult *r;
    bool ok = true;
    while (!PQisBusy(l->conn)) {
        if (!(r = PQgetResult(l->conn))) {
            if (!ok)
                return STORE_ERR_IO;
            l->state = L_READY;
            l->again = true; /* catch up from where it stopped */
            return 0;
        }
        ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    return 0;
}

bool store_listen_ready(const struct store_listen *l)
{
    return l->conn && l->state == L_READY;
}

int store_listen_fd(const struct store_listen *l)
{
    return l->conn ? PQsocket(l->conn) : -1;
}

void store_listen_close(struct store_listen *l)
{
    if (!l)
        return;
    if (l->conn)
        PQfinish(l->conn);
    free(l->conninfo);
    free(l);
}

static int send_fetch(struct store_listen *l)
{
    char id[24];
    const char *v[2] = {l->tx, id};

    snprintf(id, sizeof id, "%" PRId64, l->id);
    if (!PQsendQueryParams(l->conn, SQL_FETCH, 2, NULL, v, NULL, NULL, 0))
        return STORE_ERR_IO;
    l->fetching = true;
    l->again = false;
    l->rows = 0;
    return PQflush(l->conn) < 0 ? STORE_ERR_IO : 0;
}

static int deliver_rows(struct store_listen *l, const PGresult *r, store_log_fn *cb, void *ctx)
{
    int n = PQntuples(r);

    for (int i = 0; i < n; i++) {
        struct store_log_row row = {
            .node = pg_i64(r, i, 2),
            .kind = pg_text(r, i, 3),
            .target = pg_text(r, i, 4),
            .ref = pg_i64(r, i, 5),
            .payload = pg_text(r, i, 6),
        };
        if (!PQgetisnull(r, i, 7))
            pg_msg_from_row(r, i, 7, &row.msg);
        /* The position moves first: a row the callback chokes on is not read again forever. */
        snprintf(l->tx, sizeof l->tx, "%s", PQgetvalue(r, i, 0));
        l->id = pg_i64(r, i, 1);
        if (cb)
            cb(ctx, &row);
    }
    l->rows += n;
    return 0;
}

int store_listen_pump(struct store_listen *l, bool fetch, store_log_fn *cb, void *ctx)
{
    PGnotify *nf;

    if (l->conn && l->state != L_READY)
        return reconnect_step(l);
    if (!l->conn || PQstatus(l->conn) != CONNECTION_OK)
        return STORE_ERR_IO;
    if (!PQconsumeInput(l->conn))
        return STORE_ERR_IO;
    while ((nf = PQnotifies(l->conn)) != NULL) {
        l->again = true;
        PQfreemem(nf);
    }
    if (fetch)
        l->again = true;
    while (l->fetching && !PQisBusy(l->conn)) {
        PGresult *r = PQgetResult(l->conn);
        if (!r) {
            l->fetching = false;
            if (l->rows >= LISTEN_PAGE)
                l->again = true; /* a full page: more are waiting */
            break;
        }
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_TUPLES_OK)
            deliver_rows(l, r, cb, ctx);
        PQclear(r);
        if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK)
            l->again = true; /* a failed fetch (a cancel, a restart): try again */
    }
    /* Notifications read inside the result loop count too. */
    while ((nf = PQnotifies(l->conn)) != NULL) {
        l->again = true;
        PQfreemem(nf);
    }
    if (!l->fetching && l->again)
        return send_fetch(l);
    if (l->fetching && PQflush(l->conn) < 0)
        return STORE_ERR_IO;
    return 0;
}
