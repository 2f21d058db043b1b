/*
 * relay_smtp_int.h - private to the outbound SMTP client: the connection struct and the functions
 * its session half (relay_smtp.c) and transaction half (relay_smtp_tx.c) call across. Included by
 * those two files only; everything else uses relay_smtp.h.
 *
 * Ownership of the struct's fields is written beside each; the rules of relay_smtp.h hold (the job
 * is borrowed until its done callback, callbacks run from the notify event only).
 */
#ifndef MXG_RELAY_SMTP_INT_H
#define MXG_RELAY_SMTP_INT_H

#include "bev_io.h"
#include "relay_smtp.h"

/* The replies a connection can wait for, in the order of the conversation. */
enum expect_kind { EX_GREETING, EX_EHLO, EX_HELO, EX_STARTTLS, EX_MAIL, EX_RCPT, EX_DATA, EX_DOT, EX_RSET,
                   EX_QUIT };

struct expect {
    enum expect_kind kind;
    size_t rcpt;                /* EX_RCPT: index into the job's recipients */
};

enum conn_state {
    CS_NEW,                     /* nothing opened yet */
    CS_CONNECTING,
    CS_HELLO,                   /* greeting, EHLO/HELO, STARTTLS */
    CS_TLS,                     /* TLS handshake */
    CS_READY,                   /* session up, no transaction: the idle timer runs */
    CS_TX,                      /* transaction replies outstanding */
    CS_BODY,                    /* writing the message */
    CS_RSET,
    CS_QUIT,
    CS_CLOSED,
};

/* How a set of recipients ends: from a reply or for a local reason. */
struct verdict {
    enum relay_smtp_outcome outcome;
    int code;                   /* the reply's code; 0 for a local reason */
    char status[16];            /* enhanced status code */
    struct buf text;            /* sanitised; owned, released by whoever applies the verdict */
    enum relay_phase phase;
};

struct rcpt_state {
    bool final;                 /* result decided */
    bool in_tx;                 /* RCPT sent (or to be sent) in this transaction */
    bool accepted;              /* 2xx at RCPT */
};

struct relay_smtp {
    bool lmtp;                  /* LMTP: LHLO, and a reply per accepted recipient after the dot */
    size_t dots_left;           /* LMTP: replies to the final dot still to come */
    struct event_base *base;    /* borrowed */
    char *helo_name;            /* copied from the conf */
    char *mx_host;              /* copied from the conf */
    enum tls_policy policy;     /* the conf's, "may" without a TLS context acting as "none" */
    SSL_CTX *tls_ctx;           /* borrowed */
    struct relay_smtp_timeouts to;
    unsigned idle_ms;           /* QUIT after this long without a job */
    const struct log_ctx *logctx;   /* borrowed; may be NULL */
    struct netaddr *addrs;      /* owned copy */
    size_t naddrs, ai;          /* ai: the address in use */
    char ip[NETADDR_STRLEN];    /* of addrs[ai] */
    int port;                   /* of addrs[ai] */
    char peer[NETADDR_STRLEN];  /* "ip:port" of addrs[ai] */
    relay_smtp_closed_cb closed_cb;
    void *closed_arg;

    enum conn_state state;
    struct bufferevent *bev;    /* the socket, or the TLS filter over it */
    SSL *ssl;                   /* owned by the TLS filter */
    char *tls_info;             /* tls_describe() of the handshake; owned */
    struct event *timer;        /* the one running timeout: connect, reply, body progress, idle */
    struct event *notify;       /* runs the callbacks */
    struct expect *exp;         /* ring of replies awaited */
    size_t exp_head, exp_n, exp_cap;
    struct smtp_reply reply;   /* being parsed */

    bool pipelining, eightbitmime, smtputf8, dsn, starttls, size;   /* offered by EHLO */
    unsigned long long size_limit;  /* SIZE's parameter; 0: none given */
    bool tls_tried;             /* STARTTLS was sent on this connection */
    bool tls_fallback;          /* policy may and TLS failed (relay_smtp_report) */
    bool quit_wanted;           /* relay_smtp_quit() while an RSET was outstanding */
    enum relay_phase last_phase;    /* of the last reply taken off the queue */
    unsigned ntx;               /* transactions started */

    const struct relay_smtp_job *job;   /* borrowed until the done callback */
    relay_smtp_done_cb done_cb;
    void *done_arg;
    struct relay_smtp_result *res;  /* one per recipient; text malloc'd */
    struct rcpt_state *rs;      /* one per recipient */
    bool job_waiting;           /* accepted, transaction not started */
    bool job_finished;          /* every result decided, done callback pending */
    bool mail_ok, pipelined, need_rset;     /* MAIL accepted; sent pipelined; RSET owed */
    size_t next_rcpt, naccepted;    /* without PIPELINING: the next RCPT to send; 2xx RCPTs */
    size_t body_pos;            /* body bytes written so far */
    struct relay_stuffer stuffer;
    struct buf scratch;         /* the command or body piece being written */

    bool closed_pending;        /* closed callback owed */
    bool in_cb, freed;          /* relay_smtp_free() inside a callback: release afterwards */
};

/* ---- relay_smtp.c: results, the reply queue and timers, failures ---- */

/* Fills v with a local reason (sanitised text, code 0); the caller releases v->text. */
void relay_smtp_verdict_local(struct verdict *v, enum relay_smtp_outcome o, const char *status, enum relay_phase ph,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The verdict of the reply just parsed; the outcome follows the reply's class. */
void relay_smtp_verdict_reply(struct relay_smtp *c, struct verdict *v, enum relay_phase ph);
/* Decides recipient i with v (copied). */
void relay_smtp_apply(struct relay_smtp *c, size_t i, const struct verdict *v);
/* Every recipient not decided yet gets v, then the done callback is scheduled; releases v->text. */
void relay_smtp_finish_rest(struct relay_smtp *c, struct verdict *v);
/* Starts the connection's one timer for ms milliseconds. */
void relay_smtp_arm(struct relay_smtp *c, unsigned ms);
/* Restarts the timer for whatever the connection waits for now. */
void relay_smtp_rearm(struct relay_smtp *c);
/* Queues an expected reply (rcpt for EX_RCPT) for a command the caller writes itself. */
void relay_smtp_expect_push(struct relay_smtp *c, enum expect_kind k, size_t rcpt);
/* Writes one command line (CRLF added) and queues its expected reply. */
void relay_smtp_send_cmd(struct relay_smtp *c, enum expect_kind k, size_t rcpt, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Logs a sanitised sample of the peer's misstep and defers what is open (4.5.0); drops the connection. */
void relay_smtp_protocol_error(struct relay_smtp *c, enum relay_phase ph, const char *why, const char *sample,
                               size_t n);

/* ---- relay_smtp_tx.c: the transaction ---- */

/* Starts the job in hand on a ready session: local checks, then MAIL (with RCPTs and DATA if pipelined). */
void relay_smtp_tx_start(struct relay_smtp *c);
/* Writes the message while the socket drains, then the final dot. */
void relay_smtp_body_fill(struct relay_smtp *c);
/* A reply to MAIL, RCPT, DATA or the final dot, e being the head of the queue it answered. */
void relay_smtp_on_tx_reply(struct relay_smtp *c, struct expect e);

#endif
