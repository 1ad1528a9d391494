/*
 * gate.c -- the store fiber (gate.h). One coroutine with an mmap'd stack runs the queued entries
 * in order; the store's waiter hook parks it on a one-shot libevent event for the database socket,
 * and that event's callback resumes it. A switch is a few instructions on x86-64 (ucontext
 * elsewhere); switches are announced to AddressSanitizer (__sanitizer_start/finish_switch_fiber)
 * so its stack bookkeeping follows the fiber.
 */
#include "net/gate.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include "base/log.h"
#include "store.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define GATE_ASAN 1
#else
#define GATE_ASAN 0
#endif

/*
 * Application code runs here with its usual stack depth (JSON, fan-out, replay), and libpq's calls
 * on top: 8 MiB of address space, touched pages only, as a thread's default stack.
 */
#define GATE_STACK_SIZE (8u << 20)

struct gate_job {
    struct gate_job *next;
    gate_fn *fn;
    void *arg;
};

struct gate {
    struct event_base *base;
    struct store *store;
#if defined(__x86_64__)
    void *fiber_sp, *caller_sp; /* saved stack pointers (gate_ctx_switch) */
#else
    ucontext_t fiber, caller;
#endif
    void *stack;
    bool started;   /* the fiber's context was made */
    bool in_fiber;  /* running on the fiber now */
    bool busy;      /* the fiber has work: it runs, is parked, or entries wait */
    bool parked;    /* the fiber waits for the store's socket (wait_ev) */
    struct gate_job *head, *tail;
    /* The parked wait: fd, events, deadline (monotonic ms), result. */
    struct event *wait_ev;
    int wait_fd;
    short wait_events;
    int64_t wait_deadline;
    int wait_result;
    struct gate_stats st;
    gate_fn *idle_fn; /* gate_set_idle */
    void *idle_arg;
#if GATE_ASAN
    void *fake_caller, *fake_fiber;
    const void *caller_bottom;
    size_t caller_size;
#endif
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- switching ----
 *
 * On x86-64 a switch is six callee-saved registers and the stack pointer (gate_ctx_switch below),
 * as boost.context and libco do: glibc's swapcontext also saves and restores the signal mask, a
 * system call each way, which was two extra syscalls per database round trip for nothing (the
 * mask never changes here). Elsewhere ucontext does it. The x87/SSE control words are left alone:
 * nothing here changes them.
 */
#if defined(__x86_64__)
#define GATE_ASM_SWITCH 1
void gate_ctx_switch(void **save_sp, void *load_sp);
void gate_ctx_start(void);
__asm__(".text\n"
        ".globl gate_ctx_switch\n"
        ".type gate_ctx_switch,@function\n"
        "gate_ctx_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size gate_ctx_switch,.-gate_ctx_switch\n"
        /* A new fiber's first switch returns here: its entry gets r12 as its argument. */
        ".globl gate_ctx_start\n"
        ".type gate_ctx_start,@function\n"
        "gate_ctx_start:\n"
        "    movq %r12, %rdi\n"
        "    jmp *%r13\n"
        ".size gate_ctx_start,.-gate_ctx_start\n"
        ".section .note.GNU-stack,\"\",@progbits\n"
        ".text\n");
#else
#define GATE_ASM_SWITCH 0
#endif

/* From the loop's stack onto the fiber; returns when the fiber parks or runs out of work. */
static void switch_in(struct gate *g)
{
    g->in_fiber = true;
#if GATE_ASAN
    __sanitizer_start_switch_fiber(&g->fake_caller, g->stack, GATE_STACK_SIZE);
#endif
#if GATE_ASM_SWITCH
    gate_ctx_switch(&g->caller_sp, g->fiber_sp);
#else
    swapcontext(&g->caller, &g->fiber);
#endif
#if GATE_ASAN
    __sanitizer_finish_switch_fiber(g->fake_caller, NULL, NULL);
#endif
    g->in_fiber = false;
}

/* From the fiber back to whoever switched in; returns when switched in again. */
static void switch_out(struct gate *g)
{
#if GATE_ASAN
    __sanitizer_start_switch_fiber(&g->fake_fiber, g->caller_bottom, g->caller_size);
#endif
#if GATE_ASM_SWITCH
    gate_ctx_switch(&g->fiber_sp, g->caller_sp);
#else
    swapcontext(&g->fiber, &g->caller);
#endif
#if GATE_ASAN
    __sanitizer_finish_switch_fiber(g->fake_fiber, &g->caller_bottom, &g->caller_size);
#endif
}

static void fiber_run(struct gate *g)
{
#if GATE_ASAN
    __sanitizer_finish_switch_fiber(NULL, &g->caller_bottom, &g->caller_size);
#endif
    for (;;) {
        while (g->head) {
            struct gate_job *j = g->head;
            g->head = j->next;
            if (!g->head)
                g->tail = NULL;
            g->st.queue_len--;
            gate_fn *fn = j->fn;
            void *arg = j->arg;
            free(j);
            g->st.calls++;
            fn(arg);
            if (!g->head && g->idle_fn)
                g->idle_fn(g->idle_arg); /* may queue more (then the loop goes on) */
        }
        g->busy = false;
        switch_out(g); /* idle until the next gate_call */
    }
}

#if !GATE_ASM_SWITCH
static void fiber_main(unsigned hi, unsigned lo)
{
    fiber_run((struct gate *)(((uintptr_t)hi << 32) | (uintptr_t)lo));
}
#endif

static bool fiber_start(struct gate *g)
{
    if (g->started)
        return true;
#if GATE_ASM_SWITCH
    /* The stack gate_ctx_switch pops on the first switch in: six registers (r12: the argument,
     * r13: the entry), then the return into gate_ctx_start, which jumps to fiber_run with the
     * stack as a call leaves it (16-byte aligned + 8). */
    uintptr_t top = ((uintptr_t)g->stack + GATE_STACK_SIZE) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;                    /* fiber_run's return address: it never returns */
    *--sp = (void *)gate_ctx_start;  /* ret */
    *--sp = NULL;                    /* rbp */
    *--sp = NULL;                    /* rbx */
    *--sp = g;                       /* r12 */
    *--sp = (void *)fiber_run;       /* r13 */
    *--sp = NULL;                    /* r14 */
    *--sp = NULL;                    /* r15 */
    g->fiber_sp = sp;
    g->started = true;
    return true;
#else
    if (getcontext(&g->fiber) != 0)
        return false;
    g->fiber.uc_stack.ss_sp = g->stack;
    g->fiber.uc_stack.ss_size = GATE_STACK_SIZE;
    g->fiber.uc_link = NULL; /* fiber_main never returns */
    uintptr_t p = (uintptr_t)g;
    makecontext(&g->fiber, (void (*)(void))fiber_main, 2, (unsigned)(p >> 32),
                (unsigned)(p & 0xffffffffu));
    g->started = true;
    return true;
#endif
}

/* ---- the store's waiter ---- */

static void wait_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct gate *g = arg;
    if (!g->parked)
        return;
    g->wait_result = (what & (EV_READ | EV_WRITE)) ? 1 : 0;
    g->parked = false;
    switch_in(g);
}

/* Outside the fiber: a plain poll(), as a store without a gate waits. */
static int poll_wait(int fd, short events, int64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    for (;;) {
        int64_t left = deadline - mono_ms();
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

void gate_settle(struct gate *g)
{
    if (!g || g->in_fiber)
        return;
    while (g->busy) {
        if (!g->parked) { /* entries queued, the fiber free (a failed switch): run them */
            switch_in(g);
            continue;
        }
        event_del(g->wait_ev);
        g->wait_result = poll_wait(g->wait_fd, g->wait_events, g->wait_deadline);
        g->parked = false;
        switch_in(g);
    }
}

static int waiter_wait(void *ctx, int fd, short events, int timeout_ms)
{
    return gate_wait(ctx, fd, events, timeout_ms);
}

int gate_wait(struct gate *g, int fd, short events, int timeout_ms)
{
    int64_t deadline = mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    if (!g->in_fiber) {
        g->st.sync_waits++;
        return poll_wait(fd, events, deadline);
    }
    short what = (short)(((events & POLLIN) ? EV_READ : 0) | ((events & POLLOUT) ? EV_WRITE : 0));
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    if (event_assign(g->wait_ev, g->base, fd, what, wait_cb, g) != 0 ||
        event_add(g->wait_ev, timeout_ms > 0 ? &tv : NULL) != 0) {
        g->st.sync_waits++;
        return poll_wait(fd, events, deadline);
    }
    g->wait_fd = fd;
    g->wait_events = events;
    g->wait_deadline = deadline;
    g->parked = true;
    g->st.parks++;
    switch_out(g); /* the loop serves; wait_cb (or gate_settle) switches back in */
    return g->wait_result;
}

/* A store call is about to use the connection: from outside the fiber, the fiber's work first. */
static void waiter_enter(void *ctx)
{
    struct gate *g = ctx;
    if (!g->in_fiber && g->busy) {
        g->st.sync_waits++;
        log_debug("gate: a store call outside the fiber waits for the fiber's work");
        gate_settle(g);
    }
}

/* ---- public ---- */

struct gate *gate_new(struct event_base *base, struct store *st)
{
    struct gate *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->base = base;
    g->store = st;
    g->stack = mmap(NULL, GATE_STACK_SIZE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (g->stack == MAP_FAILED) {
        free(g);
        return NULL;
    }
    /* A guard page at the low end: an overflow faults instead of writing over the heap. */
    mprotect(g->stack, 4096, PROT_NONE);
    if (!(g->wait_ev = event_new(base, -1, 0, wait_cb, g)) || !fiber_start(g)) {
        if (g->wait_ev)
            event_free(g->wait_ev);
        munmap(g->stack, GATE_STACK_SIZE);
        free(g);
        return NULL;
    }
    if (st) {
        struct store_waiter w = {.wait = waiter_wait, .enter = waiter_enter, .ctx = g};
        store_set_waiter(st, &w);
    }
    return g;
}

void gate_free(struct gate *g)
{
    if (!g)
        return;
    gate_settle(g);
    if (g->store)
        store_set_waiter(g->store, NULL);
    event_free(g->wait_ev);
    munmap(g->stack, GATE_STACK_SIZE);
    free(g);
}

static bool gate_enqueue(struct gate *g, gate_fn *fn, void *arg, bool front)
{
    if (g->in_fiber) {
        fn(arg);
        return true;
    }
    struct gate_job *j = malloc(sizeof(*j));
    if (!j)
        return false;
    *j = (struct gate_job){NULL, fn, arg};
    if (front) {
        j->next = g->head;
        g->head = j;
        if (!g->tail)
            g->tail = j;
    } else {
        if (g->tail)
            g->tail->next = j;
        else
            g->head = j;
        g->tail = j;
    }
    if (++g->st.queue_len > g->st.queue_max)
        g->st.queue_max = g->st.queue_len;
    if (g->busy) {
        g->st.queued++;
        return true; /* the fiber takes it after what is before it */
    }
    g->busy = true;
    switch_in(g);
    return true;
}

bool gate_call(struct gate *g, gate_fn *fn, void *arg)
{
    return gate_enqueue(g, fn, arg, false);
}

bool gate_call_first(struct gate *g, gate_fn *fn, void *arg)
{
    return gate_enqueue(g, fn, arg, true);
}

void gate_cancel(struct gate *g, gate_fn *fn, void *arg)
{
    struct gate_job **pp = &g->head, *prev = NULL;
    while (*pp) {
        struct gate_job *j = *pp;
        if (j->fn == fn && j->arg == arg) {
            *pp = j->next;
            if (g->tail == j)
                g->tail = prev;
            g->st.queue_len--;
            free(j);
            continue;
        }
        prev = j;
        pp = &j->next;
    }
}

void gate_set_idle(struct gate *g, gate_fn *fn, void *arg)
{
    g->idle_fn = fn;
    g->idle_arg = arg;
}

bool gate_queued(const struct gate *g, gate_fn *fn, void *arg)
{
    for (const struct gate_job *j = g->head; j; j = j->next)
        if (j->fn == fn && j->arg == arg)
            return true;
    return false;
}

bool gate_in_fiber(const struct gate *g)
{
    return g && g->in_fiber;
}

bool gate_busy(const struct gate *g)
{
    return g && g->busy;
}

void gate_stats(const struct gate *g, struct gate_stats *out)
{
    if (g)
        *out = g->st;
    else
        memset(out, 0, sizeof(*out));
}
