/*
 * fake_dns.c - test support: a SERVFAIL upstream and a silent DNS server (see fake_dns.h).
 * RFC 1035 4.1.1: the answer is the query's own header and question with QR, RA and RCODE set.
 */
#include "fake_dns.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "peer.h"

static void servfail_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fake_dns *f = arg;
    static const unsigned char rr[] = {     /* the answer of a "half." A query */
        0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 77,
    };
    unsigned char pkt[1500];
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(fd, pkt, sizeof pkt - sizeof rr, 0, (struct sockaddr *)&from, &flen);
    if (n < 12)
        return;
    /* the question is last (no additional records): its type is 4 bytes from the end */
    bool half = f->half && n >= 17 && memcmp(pkt + 12, "\4half", 5) == 0;
    int qtype = (pkt[n - 4] << 8) | pkt[n - 3];
    pkt[2] = (unsigned char)(0x80 | (pkt[2] & 0x79));   /* QR; opcode and RD kept */
    if (half && qtype == 28)
        return;
    if (half && qtype == 1) {
        pkt[3] = 0x80;                                   /* RA, NOERROR */
        pkt[7] = 1;                                      /* one answer */
        memcpy(pkt + n, rr, sizeof rr);
        n += (ssize_t)sizeof rr;
    } else {
        pkt[3] = 0x80 | 2;                               /* RA, SERVFAIL */
        f->servfails++;
    }
    sendto(fd, pkt, (size_t)n, 0, (struct sockaddr *)&from, flen);
}

void fake_dns_servfail(struct fake_dns *f, struct event_base *base, bool half)
{
    memset(f, 0, sizeof *f);
    f->half = half;
    f->fd = tp_udp_bound(&f->port);
    f->ev = event_new(base, f->fd, EV_READ | EV_PERSIST, servfail_cb, f);
    assert_non_null(f->ev);
    assert_int_equal(event_add(f->ev, NULL), 0);
}

void fake_dns_silent(struct fake_dns *f)
{
    memset(f, 0, sizeof *f);
    f->fd = tp_udp_bound(&f->port);
}

void fake_dns_stop(struct fake_dns *f)
{
    if (f->ev != NULL)
        event_free(f->ev);
    f->ev = NULL;
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

/* "--server=/zone/127.0.0.1#port" into arg, or "" without a zone. */
static void forward_arg(char arg[96], const char *zone, int port)
{
    arg[0] = '\0';
    if (zone != NULL)
        assert_true(snprintf(arg, 96, "--server=/%s/127.0.0.1#%d", zone, port) < 96);
}

void fake_dns_pair_start(struct fake_dns_pair *p, struct event_base *base, bool half, const char *fail_zone,
                         const char *slow_zone)
{
    fake_dns_servfail(&p->servfail, base, half);
    fake_dns_silent(&p->silent);
    forward_arg(p->servfail_arg, fail_zone, p->servfail.port);
    forward_arg(p->silent_arg, slow_zone, p->silent.port);
}

void fake_dns_pair_stop(struct fake_dns_pair *p)
{
    fake_dns_stop(&p->servfail);
    fake_dns_stop(&p->silent);
}
