/*
 * fake_dns.h - test support: misbehaving DNS servers on 127.0.0.1 UDP, for a resolver or a
 * dnsmasq (--server=/zone/127.0.0.1#PORT) to forward to.
 *
 * - The SERVFAIL upstream answers every query from the test's libevent loop with SERVFAIL (the
 *   query echoed back with QR and RA set, opcode and RD kept), and counts those answers. With
 *   half set, A queries for names whose first label is "half" get 192.0.2.77 (TTL 30) instead,
 *   and AAAA queries for them no answer at all.
 * - The silent server is a bound socket that nobody reads: queries wait in its receive queue
 *   (the test may read them from fd) and are never answered.
 * A test usually starts both with fake_dns_pair_start(). Failures fail the running test.
 */
#ifndef MXG_TEST_FAKE_DNS_H
#define MXG_TEST_FAKE_DNS_H

#include <stdbool.h>

struct event;
struct event_base;

struct fake_dns {
    int fd;                 /* the bound UDP socket; -1 once stopped */
    int port;
    bool half;              /* the SERVFAIL upstream answers "half.*" A queries (see above) */
    int servfails;          /* SERVFAIL answers sent */
    struct event *ev;       /* reads queries; NULL for the silent server */
};

/* Starts the SERVFAIL upstream on base. */
void fake_dns_servfail(struct fake_dns *f, struct event_base *base, bool half);
/* Starts the silent server. */
void fake_dns_silent(struct fake_dns *f);
/* Closes the socket (and its event); a stopped server is left alone. */
void fake_dns_stop(struct fake_dns *f);

/* Both servers, and the dnsmasq arguments that forward a zone to each. */
struct fake_dns_pair {
    struct fake_dns servfail;
    struct fake_dns silent;
    char servfail_arg[96];      /* "--server=/ZONE/127.0.0.1#PORT" to servfail */
    char silent_arg[96];        /* the same to silent; "" when no zone was given */
};
#define FAKE_DNS_PAIR_INIT { .servfail = { .fd = -1 }, .silent = { .fd = -1 } }

/* Starts both (the SERVFAIL upstream on base); fail_zone and slow_zone (may be NULL) name what
 * dnsmasq forwards to them. */
void fake_dns_pair_start(struct fake_dns_pair *p, struct event_base *base, bool half, const char *fail_zone,
                         const char *slow_zone);
void fake_dns_pair_stop(struct fake_dns_pair *p);

#endif
