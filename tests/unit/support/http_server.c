/*
 * http_server.c - test support: Python's http.server and an in-process HTTP peer (see http_server.h).
 */
#include "http_server.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "peer.h"

/* ---- python http.server ---- */

static pid_t started[16];           /* every server started and not yet stopped, for the exit handler */
static bool exit_handler_set;

static void kill_started(void)
{
    for (size_t i = 0; i < sizeof started / sizeof started[0]; i++) {
        tp_kill_wait(started[i], SIGKILL);
        started[i] = 0;
    }
}

bool http_py_available(void)
{
    return access(HTTP_PY_BIN, X_OK) == 0;
}

void http_py_start(struct http_py *s, const char *dir, const char *out)
{
    size_t slot = 0;
    while (slot < sizeof started / sizeof started[0] && started[slot] > 0)
        slot++;
    assert_true(slot < sizeof started / sizeof started[0]);
    if (!exit_handler_set) {
        atexit(kill_started);
        exit_handler_set = true;
    }
    s->port = tp_free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    char *argv[] = { HTTP_PY_BIN, "-m", "http.server", port, "--bind", "127.0.0.1", "--directory", (char *)dir,
                     NULL };
    s->pid = tp_spawn(argv, out, NULL);
    started[slot] = s->pid;
    struct tp_target t = { .port = s->port };
    switch (tp_wait_ready(s->pid, tp_accepts, &t, 10000, NULL)) {
    case TP_READY:
        break;
    case TP_EXITED:
        s->pid = -1;
        started[slot] = 0;
        fail_msg("http.server on port %d exited; see %s", s->port, out);
        break;
    case TP_TIMEOUT:
        fail_msg("http.server on port %d did not accept within 10 s; see %s", s->port, out);
        break;
    }
}

void http_py_stop(struct http_py *s)
{
    if (s->pid <= 0)
        return;
    tp_kill_wait(s->pid, SIGKILL);
    for (size_t i = 0; i < sizeof started / sizeof started[0]; i++)
        if (started[i] == s->pid)
            started[i] = 0;
    s->pid = -1;
}

/* ---- the in-process peer ---- */

static void peer_drop(struct http_peer *pe, struct bufferevent *bev)
{
    for (size_t i = 0; i < HTTP_PEER_MAX_CONNS; i++)
        if (pe->bev[i] == bev)
            pe->bev[i] = NULL;
    bufferevent_free(bev);
}

static void peer_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        peer_drop(arg, bev);
}

/* Set only once a reply that closes was queued: libevent may call a write callback before that. */
static void peer_written(struct bufferevent *bev, void *arg)
{
    peer_drop(arg, bev);
}

static void peer_read(struct bufferevent *bev, void *arg)
{
    struct http_peer *pe = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0)
            return;
        size_t n = (size_t)end.pos + 4;
        buf_reset(&pe->head);
        buf_append(&pe->head, evbuffer_pullup(in, (ssize_t)n), n);
        evbuffer_drain(in, n);
        pe->requests++;
        if (pe->reply == NULL)
            continue;
        if (pe->reply[0] == '\0' && pe->close_after) {
            peer_drop(pe, bev);
            return;
        }
        if (pe->close_after)
            bufferevent_setcb(bev, peer_read, peer_written, peer_event, pe);
        bufferevent_write(bev, pe->reply, strlen(pe->reply));
    }
}

static void peer_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int len,
                        void *arg)
{
    (void)lis;
    (void)sa;
    (void)len;
    struct http_peer *pe = arg;
    pe->conns++;
    struct bufferevent *bev = bufferevent_socket_new(pe->base, fd, BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(bev);
    size_t i = 0;
    while (i < HTTP_PEER_MAX_CONNS && pe->bev[i] != NULL)
        i++;
    if (i >= HTTP_PEER_MAX_CONNS) {
        bufferevent_free(bev);
        fail_msg("http peer: more than %d connections", HTTP_PEER_MAX_CONNS);
        return;
    }
    pe->bev[i] = bev;
    bufferevent_setcb(bev, peer_read, NULL, peer_event, pe);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

void http_peer_start(struct http_peer *pe, struct event_base *base, const char *reply, bool close_after)
{
    memset(pe, 0, sizeof *pe);
    pe->base = base;
    pe->reply = reply;
    pe->close_after = close_after;
    pe->lis = tp_listen(base, peer_accept, pe, 64, &pe->port);
}

void http_peer_stop(struct http_peer *pe)
{
    for (size_t i = 0; i < HTTP_PEER_MAX_CONNS; i++)
        if (pe->bev[i] != NULL)
            peer_drop(pe, pe->bev[i]);
    if (pe->lis != NULL)
        evconnlistener_free(pe->lis);
    pe->lis = NULL;
    buf_release(&pe->head);
}
