/*
 * http_server.c - test support: Python's http.server and an in-process HTTP peer (see http_server.h).
 */
#include "http_server.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "clock.h"

/* ---- python http.server ---- */

static pid_t started[16];           /* every server started and not yet stopped, for the exit handler */
static bool exit_handler_set;

static void kill_started(void)
{
    for (size_t i = 0; i < sizeof started / sizeof started[0]; i++) {
        if (started[i] > 0) {
            kill(started[i], SIGKILL);
            waitpid(started[i], NULL, 0);
            started[i] = 0;
        }
    }
}

int http_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* A blocking connect to 127.0.0.1:port: the readiness probe (test side, not the code under test). */
static bool can_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
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
    s->port = http_free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(HTTP_PY_BIN, HTTP_PY_BIN, "-m", "http.server", port, "--bind", "127.0.0.1", "--directory", dir,
              (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    started[slot] = pid;
    long long end = clock_mono_ms() + 10000;
    while (!can_connect(s->port)) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            s->pid = -1;
            started[slot] = 0;
            fail_msg("http.server on port %d exited; see %s", s->port, out);
        }
        assert_true(clock_mono_ms() < end);
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

void http_py_stop(struct http_py *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
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
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    pe->lis = evconnlistener_new_bind(base, peer_accept, pe, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
                                      (struct sockaddr *)&sa, sizeof sa);
    assert_non_null(pe->lis);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(evconnlistener_get_fd(pe->lis), (struct sockaddr *)&sa, &len), 0);
    pe->port = ntohs(sa.sin_port);
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
