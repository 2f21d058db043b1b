/*
 * lmtp_peer.h - test support for LMTP clients (mailbox-bridge/verify_lmtp.c): the real servers
 * they talk to, and an in-process responder for what those servers cannot be made to do.
 *
 * Servers: Postfix's smtp-sink in LMTP mode (-L) on a free loopback port or a unix socket, with
 * its fault options and -c counters; Dovecot's LMTP service with a passwd-file of users. Both run
 * in a private temp directory, die with the test (PR_SET_PDEATHSIG) and are killed at exit.
 *
 * The responder listens on a free loopback port on the test's own libevent loop and answers LMTP
 * commands with scripted replies: a silent greeting, malformed lines, SMTPUTF8 offered, a 421
 * while idle, a connection dropped at MAIL. It records every command and counts connections.
 *
 * A small harness runs lookups of a verify_source on a loop and records what their done callbacks
 * saw.
 *
 * lmtp_peer_setup() makes the temp directory; lmtp_peer_teardown() stops every server still
 * running and removes it: pass both to cmocka_run_group_tests. Failures fail the running test.
 */
#ifndef MXG_TEST_LMTP_PEER_H
#define MXG_TEST_LMTP_PEER_H

#include <stdbool.h>
#include <sys/types.h>

#include "buf.h"
#include "smtp_addr.h"
#include "verify.h"

struct event_base;
struct evconnlistener;

/* cmocka group setup: logs only critical lines, ignores SIGPIPE, makes the temp directory. */
int lmtp_peer_setup(void **state);
/* cmocka group teardown: stops every server still running and removes the directory. */
int lmtp_peer_teardown(void **state);

/* A loop whose timers use the precise monotonic clock (the one clock_mono_ms() reads), so that
 * a timeout can be checked to the millisecond. */
struct event_base *lmtp_peer_base_new(void);
/* Lets deferred callbacks still queued (a closed bufferevent's last events, which hold a
 * reference to it) run, then frees the loop. */
void lmtp_peer_base_free(struct event_base *base);

/* ---- smtp-sink -L ---- */

struct lmtp_sink {
    pid_t pid;
    char target[160];       /* what to probe: "127.0.0.1:PORT" or "unix:PATH" */
    char out[160];          /* its stdout and stderr: the -c counters */
};

/*
 * Starts smtp-sink -L -c with the given options (NULL-terminated) on a free loopback port, or on
 * a unix socket in the temp directory, and waits until it accepts. The readiness check counts as
 * one session.
 */
void lmtp_sink_start(struct lmtp_sink *s, bool unix_socket, ...) __attribute__((sentinel));
void lmtp_sink_stop(struct lmtp_sink *s);
/*
 * The last "sess=N quit=N" of -c, waiting up to two seconds for sess to reach want; smtp-sink
 * counts a session when it ends.
 */
void lmtp_sink_counters(struct lmtp_sink *s, int want, int *sess, int *quit);

/* ---- Dovecot LMTP ---- */

struct lmtp_dovecot {
    pid_t pid;
    char target[64];        /* "127.0.0.1:PORT" */
};

/* Starts Dovecot (foreground, LMTP only) knowing the space-separated users; waits for its port. */
void lmtp_dovecot_start(struct lmtp_dovecot *d, const char *users);
void lmtp_dovecot_stop(struct lmtp_dovecot *d);

/* ---- the in-process responder ---- */

#define LMTP_RSP_MAX_CONNS 32

struct lmtp_rsp_conn;

/* The caller fills the replies (CRLFs included; NULL = the default), then lmtp_rsp_start(). */
struct lmtp_rsp {
    const char *greeting;   /* default "220 rsp LMTP\r\n"; "" = never speak */
    const char *lhlo;       /* default "250-rsp\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n" */
    const char *mail;       /* default "250 2.1.0 Ok\r\n" */
    const char *rcpt;       /* default "250 2.1.5 Ok\r\n" */
    const char *rset;       /* default "250 2.0.0 Ok\r\n" */
    int drop_at_mail;       /* > 0: close a connection, without a reply, at its nth MAIL */
    /* state */
    struct event_base *base;
    struct evconnlistener *lst;
    char target[64];        /* "127.0.0.1:PORT" */
    struct lmtp_rsp_conn *open[LMTP_RSP_MAX_CONNS];
    /* what was seen */
    struct buf cmds;        /* command lines of every connection, each ended by '\n' */
    int conns;              /* connections accepted */
    int eofs;               /* connections the client closed */
    int quits;              /* QUIT commands (the responder then closes the connection) */
    bool mail_pipelined;    /* at the last MAIL, more bytes were already waiting behind it */
};

void lmtp_rsp_start(struct lmtp_rsp *rsp, struct event_base *base);
/* Closes every connection and the listener; releases what rsp holds. */
void lmtp_rsp_stop(struct lmtp_rsp *rsp);
/* Writes s, as it is, on every open connection. */
void lmtp_rsp_say(struct lmtp_rsp *rsp, const char *s);
/* Closes every open connection from the server side. */
void lmtp_rsp_close_all(struct lmtp_rsp *rsp);
/* Closes the oldest open connection from the server side. */
void lmtp_rsp_close_one(struct lmtp_rsp *rsp);

/* ---- running lookups ---- */

/* What the done callback saw for one lookup, and what it does next. */
struct lmtp_ans {
    int n;                              /* calls */
    enum verify_answer a;
    long long at;                       /* when, clock_mono_ms() */
    int seq;                            /* order among all answers */
    struct verify_source *free_src;     /* free this source from the callback */
    struct verify_source *again_src;    /* look again from the callback... */
    const struct smtp_path *again_path;
    struct lmtp_ans *again_ans;         /* ...recording the answer here */
};

/* The done callback; arg: a struct lmtp_ans. */
void lmtp_ans_cb(enum verify_answer a, void *arg);
/* Parses "<mailbox>" into p (UTF-8 allowed); smtp_path_clear() it. */
void lmtp_path(struct smtp_path *p, const char *s);
/* Runs the loop until the n answers are in (8 s at most). */
void lmtp_wait_answers(struct event_base *base, struct lmtp_ans *a, size_t n);
/* One lookup of addr, run to its answer, which must come exactly once; returns it. */
enum verify_answer lmtp_ask(struct event_base *base, struct verify_source *src, const char *addr);

#endif
