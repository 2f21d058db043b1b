/*
 * test_bev_io.c - unit tests of the bufferevent shortcuts (lib/bev_io.c), over socketpairs:
 * bytes written straight to the socket and bytes left queued keep their order, also when the
 * socket fills up in the middle of a write; nothing is written directly while the output buffer
 * holds something, to a bufferevent with writing disabled, or to one without a socket; a read
 * takes far more than libevent's 4096 bytes at once and keeps the order; end of file is left
 * for the bufferevent to find.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bev_io.h"
#include "support/peer.h"

/* Byte i of the test pattern: no period shorter than the socket buffers. */
static char pattern(size_t i)
{
    return (char)('a' + (i * 7 + i / 251) % 26);
}

static void fill(char *p, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern(off + i);
}

struct pair {
    struct event_base *base;
    struct bufferevent *bev;    /* over fd[0] */
    int peer;                   /* fd[1], non-blocking */
};

static void pair_open(struct pair *p)
{
    int fd[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0);
    assert_int_equal(fcntl(fd[0], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(fcntl(fd[1], F_SETFL, O_NONBLOCK), 0);
    p->base = event_base_new();
    assert_non_null(p->base);
    p->bev = bufferevent_socket_new(p->base, fd[0], BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(p->bev);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    p->peer = fd[1];
}

static void pair_close(struct pair *p)
{
    bufferevent_free(p->bev);
    if (p->peer >= 0)
        close(p->peer);
    event_base_free(p->base);
}

/* Reads from the peer, running the loop so that the bufferevent writes what it queued. */
static size_t drain_peer(struct pair *p, char *out, size_t want)
{
    size_t got = 0;
    for (int idle = 0; got < want && idle < 200;) {
        ssize_t n = read(p->peer, out + got, want - got);
        if (n > 0) {
            got += (size_t)n;
            idle = 0;
            continue;
        }
        assert_true(n < 0 && errno == EAGAIN);
        tp_run_for(p->base, 10);
        idle++;
    }
    return got;
}

static size_t queued(struct pair *p)
{
    return evbuffer_get_length(bufferevent_get_output(p->bev));
}

/* Small, huge (the socket fills in its middle), small: every byte arrives, in order. */
static void test_write_order_across_a_full_socket(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    const size_t small = 100, huge = 8 * 1024 * 1024, total = small + huge + small;
    char *data = malloc(total), *got = malloc(total);
    assert_non_null(data);
    assert_non_null(got);
    fill(data, 0, total);

    bev_io_write(p.bev, data, small);
    assert_int_equal(queued(&p), 0);                /* the socket took it at once */
    bev_io_write(p.bev, data + small, huge);
    size_t left = queued(&p);
    assert_true(left > 0 && left < huge);           /* partly sent, the rest queued */
    bev_io_write(p.bev, data + small + huge, small);
    assert_int_equal(queued(&p), left + small);     /* queued behind, not sent past it */

    assert_int_equal(drain_peer(&p, got, total), total);
    assert_memory_equal(got, data, total);
    assert_int_equal(queued(&p), 0);
    free(data);
    free(got);
    pair_close(&p);
}

/* Writing disabled, or no socket under the bufferevent: everything is queued. */
static void test_write_queues_when_it_must(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    bufferevent_disable(p.bev, EV_WRITE);
    bev_io_write(p.bev, "hello", 5);
    assert_int_equal(queued(&p), 5);
    char buf[8];
    assert_int_equal(read(p.peer, buf, sizeof buf), -1);    /* nothing reached the peer */
    bufferevent_enable(p.bev, EV_WRITE);
    assert_int_equal(drain_peer(&p, buf, 5), 5);
    assert_memory_equal(buf, "hello", 5);
    pair_close(&p);

    struct event_base *base = event_base_new();
    struct bufferevent *nofd = bufferevent_socket_new(base, -1, 0);
    bufferevent_enable(nofd, EV_WRITE);
    bev_io_write(nofd, "x", 1);
    assert_int_equal(evbuffer_get_length(bufferevent_get_output(nofd)), 1);
    bev_io_write(nofd, "", 0);
    assert_int_equal(evbuffer_get_length(bufferevent_get_output(nofd)), 1);
    bufferevent_free(nofd);
    event_base_free(base);
}

/* What the peer sent is taken in one go, far past 4096 bytes, up to max, in order. */
static void test_read_takes_what_is_there(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    const size_t n = 150 * 1024;
    char *data = malloc(n);
    assert_non_null(data);
    fill(data, 0, n);
    size_t sent = 0;
    while (sent < n) {
        ssize_t w = write(p.peer, data + sent, n - sent);
        assert_true(w > 0);     /* a unix socketpair buffers this much */
        sent += (size_t)w;
    }
    struct evbuffer *in = bufferevent_get_input(p.bev);
    assert_int_equal(bev_io_read(p.bev, 0), 0);
    assert_int_equal(bev_io_read(p.bev, 1000), 1000);
    size_t got = bev_io_read(p.bev, 1024 * 1024);
    assert_int_equal(got, n - 1000);
    assert_int_equal(evbuffer_get_length(in), n);
    char *flat = (char *)evbuffer_pullup(in, -1);
    assert_memory_equal(flat, data, n);
    assert_int_equal(bev_io_read(p.bev, 4096), 0);          /* nothing more: EAGAIN */

    /* End of file: reported as nothing read; the bufferevent finds it itself. */
    close(p.peer);
    p.peer = -1;
    assert_int_equal(bev_io_read(p.bev, 4096), 0);
    assert_int_equal(evbuffer_get_length(in), n);

    /* Reading disabled: the socket is not touched. */
    bufferevent_disable(p.bev, EV_READ);
    assert_int_equal(bev_io_read(p.bev, 4096), 0);
    free(data);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_order_across_a_full_socket),
        cmocka_unit_test(test_write_queues_when_it_must),
        cmocka_unit_test(test_read_takes_what_is_there),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
