/*
 * smtp_peer.h - test support for the outbound SMTP client (relay/relay_smtp.c): the servers it
 * talks to, and a harness that runs its jobs.
 *
 * Servers: smtp-sink processes (postfix package) on free loopback ports, with their fault options,
 * -c counters and dump files; and an in-process responder on the test's own libevent loop for what
 * smtp-sink cannot do (STARTTLS, exact wire bytes, SIZE, SMTPUTF8, replies that were not asked for,
 * malformed replies). The harness runs a relay_smtp connection on a private loop, copying what the
 * done callback reports, bounded by an 8-second guard.
 *
 * smtp_peer_setup() makes a temp directory (dumps, certificates); smtp_peer_teardown() stops the
 * sinks still running and removes it: pass both to cmocka_run_group_tests. Failures fail the
 * running test.
 */
#ifndef MXG_TEST_SMTP_PEER_H
#define MXG_TEST_SMTP_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "netaddr.h"
#include "relay_smtp.h"

struct bufferevent;
struct evconnlistener;

extern char smtp_peer_cert_file[128];   /* the responder's certificate, once a TLS responder started */
extern char smtp_peer_key_file[128];    /* and its key */

/* cmocka group setup: logs only critical lines, ignores SIGPIPE, makes the temp directory. */
int smtp_peer_setup(void **state);
/* cmocka group teardown: stops every sink still running and removes the directory. */
int smtp_peer_teardown(void **state);

/* 127.0.0.1:port. */
struct netaddr smtp_peer_loopback(int port);

/* ---- smtp-sink ---- */

struct smtp_peer_sink {
    int port;
    pid_t pid;
    char dir[128];      /* dump directory */
    char out[128];      /* stdout: the -c counters */
};

/* Starts smtp-sink with the given options (NULL-terminated) and waits until it accepts. */
void smtp_peer_sink_start(struct smtp_peer_sink *s, ...) __attribute__((sentinel));
void smtp_peer_sink_stop(struct smtp_peer_sink *s);
/*
 * The last "sess=N quit=N mesg=N" line of -c, waiting up to a second for sess to reach want.
 * smtp_peer_sink_start's readiness probe counts as one session (no QUIT, no message).
 */
void smtp_peer_sink_counters(struct smtp_peer_sink *s, int want, int *sess, int *quit, int *mesg);
/* The concatenated dump files of s (usually one), waiting up to a second for want of them; free(). */
char *smtp_peer_sink_dump(struct smtp_peer_sink *s, int want);
/* The value of the nth header line "name: " in a dump, or "" (static buffer). */
const char *smtp_peer_dump_field(const char *dump, const char *name, int nth);
/* The message as dumped: what follows smtp-sink's three-line Received header. */
const char *smtp_peer_dump_message(const char *dump);

/* ---- running the client ---- */

/* Short names of the outcomes, for the tests' tables. */
#define DELIVERED RELAY_SMTP_DELIVERED
#define DEFERRED RELAY_SMTP_DEFERRED
#define FAILED RELAY_SMTP_FAILED

/* One connection under test and what its callbacks reported. */
struct smtp_peer_run {
    struct event_base *base;
    struct relay_smtp *c;
    int done, closed;                       /* callbacks seen */
    struct relay_smtp_result res[8];        /* of the last done callback; text points into text[] */
    char text[8][1100];
    size_t n;
    bool tls, tls_fallback, dsn, reused;
    char peer[NETADDR_STRLEN];
    const struct relay_smtp_job *next;      /* sent from within the done callback */
    bool free_in_done;
    bool guard_fired;
    const char *want_host;                  /* NULL: "mx.remote.test" */
};

/* The callbacks to hand relay_smtp_new (arg: the run) and relay_smtp_send (arg: the run). */
void smtp_peer_done_cb(struct relay_smtp *c, const struct relay_smtp_report *rep, void *arg);
void smtp_peer_closed_cb(struct relay_smtp *c, void *arg);

/* Helo "relay.test", host "mx.remote.test", TLS may, idle 200 ms, every timeout 3 s. */
struct relay_smtp_conf smtp_peer_conf(void);
/* A message with leading dots, bare CR and LF, 8-bit text and no final line end. */
extern const char smtp_peer_body_in[];
extern const size_t smtp_peer_body_in_len;
/* The same as smtp-sink dumps it: unstuffed, one LF per line end, plus its closing empty line. */
extern const char smtp_peer_body_dumped[];
/* The same as it must appear on the wire: stuffed, CRLF line ends, the final dot. */
extern const char smtp_peer_body_wire[];
extern const size_t smtp_peer_body_wire_len;
/* smtp_peer_body_in from s@src.test to three recipients with NOTIFY, ORCPT, ENVID and RET=HDRS. */
struct relay_smtp_job smtp_peer_job3(void);

/* Zeroes r, makes its loop and a connection to addrs; no job yet. */
void smtp_peer_run_open(struct smtp_peer_run *r, const struct relay_smtp_conf *conf, const struct netaddr *addrs,
                        size_t n);
/* Runs the loop until done reaches ndone (and closed fired when want_closed), 8 s at most. */
void smtp_peer_run_until(struct smtp_peer_run *r, int ndone, bool want_closed);
/* Sends job to addrs with conf and runs it to its done callback. */
void smtp_peer_run_job(struct smtp_peer_run *r, const struct relay_smtp_conf *conf, const struct netaddr *addrs,
                       size_t n, const struct relay_smtp_job *job, bool want_closed);
/* Frees the connection and the loop. */
void smtp_peer_run_free(struct smtp_peer_run *r);
/* Every result has outcome o, code, status and phase, and text (unless NULL) inside its text. */
void smtp_peer_expect_all(const struct smtp_peer_run *r, enum relay_smtp_outcome o, int code, const char *status,
                          enum relay_phase ph, const char *text);
/* Result k has exactly outcome o, code, status, phase and text. */
void smtp_peer_expect_rcpt(const struct smtp_peer_run *r, size_t k, enum relay_smtp_outcome o, int code,
                           const char *status, enum relay_phase ph, const char *text);
/* smtp_peer_expect_all for table case i of a test, which the failure message names. */
void smtp_peer_expect_case(const struct smtp_peer_run *r, size_t i, enum relay_smtp_outcome o, int code,
                           const char *status, enum relay_phase ph, const char *text);

/* ---- the in-process responder ---- */

/* How the responder answers STARTTLS: not offered, a handshake, plaintext instead of a handshake,
 * a 220 with a reply behind it, a 454 refusal, a 220 and then silence. */
enum smtp_peer_tls {
    SMTP_PEER_TLS_OFF, SMTP_PEER_TLS_OK, SMTP_PEER_TLS_BROKEN, SMTP_PEER_TLS_INJECT, SMTP_PEER_TLS_REFUSE,
    SMTP_PEER_TLS_STALL,
};

/* One connection at a time. The caller fills the replies and tls, then smtp_peer_rsp_start(). */
struct smtp_peer_rsp {
    struct event_base *base;
    struct evconnlistener *lst;
    int port;
    /* replies, CRLFs included; NULL = the default */
    const char *greeting;       /* "" = never greet */
    const char *ehlo;
    const char *mail_reply;
    const char *rcpt_reject;    /* RCPT lines containing this get 550 5.1.1 */
    const char *data_reply;
    const char *dot_reply;
    enum smtp_peer_tls tls;
    SSL_CTX *ctx;               /* owned; made at start for a TLS mode when NULL */
    /* state */
    struct bufferevent *bev;
    bool in_data, broken_wait, closing, stalled;
    int rcpt_ok;                /* RCPTs accepted in this transaction */
    /* what was seen */
    struct buf cmds;            /* command lines, each ended by '\n'; "<TLS>\n" where TLS started */
    struct buf data;            /* raw bytes after 354, final dot included */
    int conns, ehlos, pending_at_mail;
    bool eof;
};

/* Listens on a free loopback port on base. */
void smtp_peer_rsp_start(struct smtp_peer_rsp *rsp, struct event_base *base);
/* Closes the connection and the listener; frees what rsp owns. */
void smtp_peer_rsp_stop(struct smtp_peer_rsp *rsp);
/* Writes s on the connection as it is. */
void smtp_peer_rsp_say(struct smtp_peer_rsp *rsp, const char *s);
/* Zeroes r, makes its loop, starts rsp on it and a connection to rsp; no job yet. */
void smtp_peer_rsp_open(struct smtp_peer_run *r, struct smtp_peer_rsp *rsp, const struct relay_smtp_conf *conf);
/* Runs the loop a little until the responder has seen its connection end. */
void smtp_peer_rsp_wait_eof(struct smtp_peer_run *r, struct smtp_peer_rsp *rsp);
/* Runs job against rsp (its fields filled by the caller) to done and close. */
void smtp_peer_rsp_run(struct smtp_peer_run *r, struct smtp_peer_rsp *rsp, const struct relay_smtp_conf *conf,
                       const struct relay_smtp_job *job);
/* smtp_peer_rsp_stop, then smtp_peer_run_free. */
void smtp_peer_rsp_finish(struct smtp_peer_run *r, struct smtp_peer_rsp *rsp);

#endif
