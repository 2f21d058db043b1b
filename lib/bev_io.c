/*
 * bev_io.c - immediate writes to, and larger reads from, plain socket bufferevents (bev_io.h).
 *
 * Only a socket bufferevent that is not filtered (no TLS layer over it) is touched directly:
 * anything else would bypass TLS. Writes go straight out only when the output buffer is empty,
 * so bytes are never reordered; a failed or partial send leaves the rest to the bufferevent,
 * which reports a broken socket through its event callback when it writes.
 */
#include "bev_io.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/event.h>

/* The socket under bev when bev is a plain socket bufferevent with ev enabled, else -1. */
static evutil_socket_t plain_fd(struct bufferevent *bev, short ev)
{
    if (bufferevent_get_underlying(bev) != NULL || !(bufferevent_get_enabled(bev) & ev))
        return -1;
    return bufferevent_getfd(bev);
}

void bev_io_write(struct bufferevent *bev, const void *data, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    const char *p = data;
    evutil_socket_t fd = plain_fd(bev, EV_WRITE);
    if (len > 0 && fd >= 0 && evbuffer_get_length(out) == 0) {
        ssize_t n;
        do
            n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
    }
    if (len > 0)
        evbuffer_add(out, p, len);
}

size_t bev_io_read(struct bufferevent *bev, size_t max)
{
    evutil_socket_t fd = plain_fd(bev, EV_READ);
    if (fd < 0 || max == 0)
        return 0;
    struct evbuffer *in = bufferevent_get_input(bev);
    /* The bufferevent freezes its input's end against other writers; it thaws it for its own
     * reads just so. */
    evbuffer_unfreeze(in, 0);
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)max, v, 2);
    if (nv <= 0) {
        evbuffer_freeze(in, 0);
        return 0;
    }
    struct iovec iov[2];
    size_t room = 0;
    for (int i = 0; i < nv; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
        if (iov[i].iov_len > max - room)
            iov[i].iov_len = max - room;
        room += iov[i].iov_len;
    }
    ssize_t got;
    do
        got = readv(fd, iov, nv);
    while (got < 0 && errno == EINTR);
    size_t left = got > 0 ? (size_t)got : 0;
    int used = 0;
    for (int i = 0; i < nv && left > 0; i++, used++) {
        v[i].iov_len = left < iov[i].iov_len ? left : iov[i].iov_len;
        left -= v[i].iov_len;
    }
    evbuffer_commit_space(in, v, used);
    evbuffer_freeze(in, 0);
    return got > 0 ? (size_t)got : 0;
}

void bev_io_nodelay(evutil_socket_t fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);    /* fails on unix sockets */
}
