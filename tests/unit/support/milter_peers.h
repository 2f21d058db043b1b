/*
 * milter_peers.h - test support for the milter chain (filters/filter_milter.c): the real milters
 * it talks to, and a scripted milter for what no real milter does.
 *
 * Real milters: spamd + spamass-milter and clamd + clamav-milter (Debian packages), each started
 * once per test group in a temp directory on free loopback ports (clamd with a one-line signature
 * database made by sigtool from an EICAR file, since no signature download is possible), and
 * stopped by pid at teardown, or by PR_SET_PDEATHSIG should the test die.
 *
 * The scripted milter runs on the test's own libevent loop: it answers the negotiation with the
 * version, actions, protocol flags and macro lists it is given, each command with the reply it is
 * given, end-of-message with progress packets, delays and a script of modification packets; or it
 * stays silent, writes garbage, or hangs up. It records every packet it receives.
 *
 * milter_peers_setup() / milter_peers_teardown() go to cmocka_run_group_tests. Failures fail the
 * running test.
 */
#ifndef MXG_TEST_MILTER_PEERS_H
#define MXG_TEST_MILTER_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct event_base;
struct event;
struct bufferevent;
struct evconnlistener;

/* cmocka group setup: logs only critical lines, ignores SIGPIPE, makes the temp directory. */
int milter_peers_setup(void **state);
/* cmocka group teardown: stops every process started, removes the directory (kept, and named on
 * stderr, when MILTER_PEERS_KEEP is set: the daemons' logs are there). */
int milter_peers_teardown(void **state);

/* Open file descriptors of this process (entries of /proc/self/fd). */
int milter_peers_fds(void);

/* ---- real milters ---- */

/* The 68-byte EICAR anti-virus test string. */
extern const char milter_peers_eicar[];
/* The GTUBE anti-spam test string. */
extern const char milter_peers_gtube[];

/* Starts spamd and spamass-milter (-r 5) unless running; spec gets "inet:PORT@127.0.0.1". */
void milter_peers_spamass(char spec[64]);
/* Starts clamd (EICAR signature only) and clamav-milter (OnInfected Reject) unless running. */
void milter_peers_clamav(char spec[64]);

/* ---- the scripted milter ---- */

enum milter_peer_mode {
    MILTER_PEER_SCRIPT,     /* answer as configured */
    MILTER_PEER_SILENT,     /* accept the connection, never answer */
    MILTER_PEER_GARBAGE,    /* answer the negotiation with the bytes in garbage */
    MILTER_PEER_HANGUP,     /* close the connection when the negotiation comes */
};

struct milter_peer {
    /* set before milter_peer_start() (or before a connection comes) */
    enum milter_peer_mode mode;
    uint32_t version, actions, proto;   /* negotiation reply; version 0 means 6 */
    struct buf optneg_extra;            /* appended to the negotiation reply (macro lists) */
    struct buf garbage;                 /* MILTER_PEER_GARBAGE's answer */
    char reply[128];                    /* reply letter per command letter; 0: 'c' */
    const char *reply_text[128];        /* for a 'y' reply: its text (the NUL is added) */
    int eom_delay_ms;                   /* at EOM: wait this long first */
    int progress_n, progress_ms;        /* at EOM: then n progress packets, ms apart */
    struct buf eom;                     /* at EOM: then these whole packets, then the reply */
    /* what was seen: one line per packet, see milter_peers.c */
    struct buf seen;
    int conns;                          /* connections accepted */
    bool eof;                           /* the last connection ended (and is closed) */
    /* internals */
    struct event_base *base;
    struct evconnlistener *lst;
    int port;
    char spec[64];                      /* "inet:PORT@127.0.0.1" */
    struct bufferevent *bev;
    struct event *timer;
    int progress_left;
};

/* Listens on a free loopback port on base. */
void milter_peer_start(struct milter_peer *p, struct event_base *base);
/* Closes the connection and the listener; frees what p owns. */
void milter_peer_stop(struct milter_peer *p);
/* Appends one whole packet (length, command, data) to b. */
void milter_peer_pkt(struct buf *b, char cmd, const void *data, size_t len);

#endif
