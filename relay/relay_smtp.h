/*
 * relay_smtp.h - the outbound SMTP client of the relay: one connection to one destination host,
 * carrying one transaction at a time, reusable for the next (RFC 5321, 1870, 2920, 3207, 3461,
 * 6152, 6531).
 *
 *   struct relay_smtp *c = relay_smtp_new(base, &conf, addrs, naddrs, closed_cb, pool);
 *   if (!relay_smtp_send(c, &job, done_cb, msg)) ...    // done_cb(c, report, msg) follows once
 *   ... in done_cb or later: relay_smtp_send(c, &next_job, ...) to reuse the connection,
 *   relay_smtp_quit(c) to end it politely (closed_cb follows), or relay_smtp_free(c).
 *
 * Nothing blocks: everything runs on the caller's libevent loop. Callbacks are never called from
 * inside a relay_smtp_* call, and relay_smtp_free() may be called from within any of them.
 */
#ifndef MXG_RELAY_SMTP_H
#define MXG_RELAY_SMTP_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "buf.h"
#include "smtp_reply.h"
#include "edge_parse.h"
#include "log.h"
#include "netaddr.h"
#include "tls_client.h"

/* Where in the conversation a result was decided. */
enum relay_phase {
    RELAY_PHASE_CONNECT,    /* TCP connect */
    RELAY_PHASE_GREETING,   /* the server's 220 */
    RELAY_PHASE_EHLO,
    RELAY_PHASE_HELO,
    RELAY_PHASE_STARTTLS,   /* the STARTTLS command, or STARTTLS required but not offered */
    RELAY_PHASE_TLS,        /* the TLS handshake and certificate check */
    RELAY_PHASE_MAIL,
    RELAY_PHASE_RCPT,
    RELAY_PHASE_DATA,       /* the reply to the DATA command */
    RELAY_PHASE_BODY,       /* sending the message and the reply to its final dot */
    RELAY_PHASE_RSET,
    RELAY_PHASE_QUIT,
};

/* "connect", "greeting", "EHLO", "HELO", "STARTTLS", "TLS handshake", "MAIL FROM", "RCPT TO",
 * "DATA", "end of data", "RSET", "QUIT". */
const char *relay_phase_name(enum relay_phase p);

enum relay_smtp_outcome {
    RELAY_SMTP_DELIVERED,   /* 2xx at the end of data */
    RELAY_SMTP_DEFERRED,    /* 4xx, 421, timeouts, refused or lost connections, TLS failures */
    RELAY_SMTP_FAILED,      /* 5xx, or a local permanent reason (SMTPUTF8, size) */
};

/*
 * RFC 5321 §4.5.3.2 timeouts, in milliseconds. relay_smtp_timeouts_default() fills the RFC's
 * values (connect 30 s, which the RFC leaves open; STARTTLS, handshake, RSET and QUIT 5 min).
 */
struct relay_smtp_timeouts {
    unsigned connect_ms;    /* TCP connect, per address */
    unsigned greeting_ms;   /* initial 220: 5 min */
    unsigned helo_ms;       /* EHLO/HELO reply: 5 min (the RFC's MAIL value) */
    unsigned starttls_ms;   /* STARTTLS reply, then the handshake */
    unsigned mail_ms;       /* MAIL reply: 5 min */
    unsigned rcpt_ms;       /* each RCPT reply: 5 min */
    unsigned data_init_ms;  /* the 354: 2 min */
    unsigned data_block_ms; /* no progress while sending the message: 3 min */
    unsigned data_done_ms;  /* reply to the final dot: 10 min */
    unsigned rset_ms;       /* RSET reply */
    unsigned quit_ms;       /* QUIT reply */
};

void relay_smtp_timeouts_default(struct relay_smtp_timeouts *t);

/* How to talk to one destination host. Copied by relay_smtp_new(); tls_ctx is borrowed. */
struct relay_smtp_conf {
    bool lmtp;                      /* speak LMTP (RFC 2033): LHLO, one reply per recipient after
                                     * the final dot */
    const char *helo_name;          /* our name in EHLO/HELO/LHLO */
    const char *mx_host;            /* the host's name: results, SNI, name checked under verify */
    enum tls_policy tls;
    SSL_CTX *tls_ctx;               /* tls_client_ctx_new(); must outlive the connection. NULL:
                                     * "may" acts as "none", "encrypt"/"verify" defer (4.7.5) */
    struct relay_smtp_timeouts timeouts;
    unsigned idle_ms;               /* an idle connection sends QUIT after this long (0: at once) */
    const struct log_ctx *logctx;   /* borrowed for the connection's lifetime; may be NULL */
};

/* One recipient of a job. */
struct relay_smtp_rcpt {
    const char *addr;               /* mailbox, without angle brackets */
    unsigned notify;                /* DSN_NOTIFY_* flags; 0 = none given */
    const char *orcpt;              /* "rfc822;addr" as received (decoded), or NULL */
};

/*
 * One transaction. Everything it points to is owned by the caller and must stay valid and
 * unchanged until the done callback has been called (or the connection freed).
 */
struct relay_smtp_job {
    const char *sender;             /* reverse-path without brackets; "" = the null sender */
    const char *envid;              /* DSN ENVID (decoded), or NULL */
    enum dsn_ret ret;               /* DSN RET */
    const char *body;               /* header and body, CRLF line ends, no dot-stuffing */
    size_t body_len;
    bool eightbit;                  /* received as BODY=8BITMIME (also detected from the body) */
    bool smtputf8;                  /* received with SMTPUTF8: the headers may carry UTF-8 */
    const struct relay_smtp_rcpt *rcpts;
    size_t nrcpts;
};

/* What became of one recipient. */
struct relay_smtp_result {
    enum relay_smtp_outcome outcome;
    int code;                       /* the server's reply code; 0 when no reply decided it */
    char status[16];                /* enhanced status "5.1.1": the server's, or derived */
    const char *text;               /* reply text (status code removed, lines joined with a space)
                                     * or the local reason; sanitised (buf_append_sanitized) */
    const char *mx_host;            /* conf.mx_host */
    enum relay_phase phase;
};

/* Handed to the done callback; valid only during the call. */
struct relay_smtp_report {
    const struct relay_smtp_result *results;    /* one per job rcpt, in the job's order */
    size_t nrcpts;
    const char *peer;               /* "ip:port" last talked to (or tried), "" when none */
    bool tls;                       /* the transaction ran over TLS */
    const char *tls_info;           /* tls_describe() text when tls, else NULL */
    bool tls_fallback;              /* policy may and the handshake failed: every recipient is
                                     * deferred (4.7.5); a new connection with TLS_POLICY_NONE may
                                     * deliver in plaintext */
    bool dsn;                       /* the server offered DSN (else NOTIFY=SUCCESS needs a
                                     * "relayed" notice from the caller) */
    bool reused;                    /* an earlier transaction used this connection */
};

struct relay_smtp;

typedef void (*relay_smtp_done_cb)(struct relay_smtp *c, const struct relay_smtp_report *rep, void *arg);
/* The connection ended while no job was in hand (idle timeout, QUIT, server gone, or after the
 * done callback of a job that ended it). Only relay_smtp_free() is left to do. */
typedef void (*relay_smtp_closed_cb)(struct relay_smtp *c, void *arg);

/*
 * A connection object for one destination host; no connection is opened until the first job.
 * addrs (copied) are tried in order: a refused or timed-out connect, or a server failing before
 * its greeting completes, moves on to the next address. closed may be NULL.
 */
struct relay_smtp *relay_smtp_new(struct event_base *base, const struct relay_smtp_conf *conf,
                                  const struct netaddr *addrs, size_t naddrs,
                                  relay_smtp_closed_cb closed, void *arg);

/*
 * Starts job on this connection (connecting first if needed). false when the connection is busy
 * with another job, has closed, or job has no recipients; otherwise done is called exactly once.
 */
bool relay_smtp_send(struct relay_smtp *c, const struct relay_smtp_job *job, relay_smtp_done_cb done,
                     void *arg) __attribute__((warn_unused_result));

/* A send would be accepted now. */
bool relay_smtp_ready(const struct relay_smtp *c);

/* Sends QUIT if the connection is idle (or drops it if it never got that far); closed follows.
 * false, doing nothing, while a job is in hand. */
bool relay_smtp_quit(struct relay_smtp *c);

/*
 * Drops the connection at once, without QUIT, and frees c. A job in hand is abandoned: its done
 * callback is not called, and its recipients count as not delivered. No callback follows. Safe
 * inside this connection's callbacks (the memory is released when the callback returns).
 */
void relay_smtp_free(struct relay_smtp *c);

/* Number of transactions started on this connection. */
unsigned relay_smtp_transactions(const struct relay_smtp *c);

/* ---- the pieces below are pure functions (relay_smtp_reply.c), exposed for table-driven tests ---- */

/* CRLF normalisation and dot-stuffing of a message streamed in pieces (RFC 5321 §4.5.2). */
struct relay_stuffer {
    bool bol;                       /* at the start of a line */
    bool cr;                        /* a CR was seen and its line end not written yet */
};

void relay_stuff_init(struct relay_stuffer *s);
/* Appends p[0..n) to out with every CR, LF and CRLF written as CRLF and a '.' doubled at the
 * start of a line. */
void relay_stuff(struct relay_stuffer *s, const char *p, size_t n, struct buf *out);
/* Ends the last line if it is open, then appends the final ".\r\n". */
void relay_stuff_end(struct relay_stuffer *s, struct buf *out);

#endif
