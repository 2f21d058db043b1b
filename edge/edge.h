/*
 * edge.h - the edge role: SMTP listeners, sessions and transactions (private to edge/).
 *
 * One edge process runs one libevent loop with every listener on it. A session (struct
 * edge_session) is one client connection: its TLS, HELO, AUTH and error state. A transaction
 * (struct edge_tx) is one MAIL .. end-of-data: sender, recipients, content. RSET or a new MAIL
 * frees the transaction and nothing else (the OpenSMTPD split).
 *
 * Files: edge_main.c (role entry, start-up), edge_server.c (listeners, accept, connection limits),
 * edge_session.c (the state machine, one edge_cmd_<verb>() per command), edge_data_in.c (DATA
 * and BDAT input, enqueue), edge_tls.c (STARTTLS and implicit TLS), edge_auth.c (AUTH dialog),
 * edge_policy.c (relay policy and recipient lookup), edge_received.c (the Received header),
 * edge_parse.c / edge_data.c (pure parsers).
 */
#ifndef MXG_EDGE_H
#define MXG_EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "buf.h"
#include "clock.h"
#include "cidr.h"
#include "edge_data.h"
#include "edge_parse.h"
#include "log.h"
#include "netaddr.h"
#include "queue.h"

struct event_base;
struct event;
struct bufferevent;
struct evconnlistener;
struct redis;
struct workq;
struct authdb;
struct edge_rcptdb;
struct edge_rcpt_source;

enum edge_listener_kind { LISTENER_MX, LISTENER_SUBMISSION, LISTENER_SMTPS };

/* What the policy and the recipient lookup say of one RCPT. */
enum edge_rcpt_verdict {
    RCPT_ACCEPT,            /* the recipient exists (or relaying is allowed) */
    RCPT_RELAY_DENIED,      /* 554 5.7.1 */
    RCPT_UNKNOWN_USER,      /* 550 5.1.1 */
    RCPT_TEMPFAIL,          /* a source could not answer: 450 4.3.0 */
    RCPT_DUNNO,             /* this source does not know: ask the next one */
};


struct edge_listener {
    struct edge_server *srv;        /* owner */
    enum edge_listener_kind kind;
    struct evconnlistener *evl;     /* accepting socket */
    char addr[NETADDR_STRLEN];      /* "127.0.0.1:2525", for logs */
};

/* One per process: what every session shares. */
struct edge_server {
    struct event_base *base;
    struct redis *redis;            /* the queue */
    SSL_CTX *tls;                   /* NULL: no certificate, no STARTTLS / AUTH / smtps */
    struct workq *workq;            /* crypt(3) and other blocking work */
    struct authdb *authdb;          /* NULL: no AUTH offered */
    struct cidr_list trusted;       /* edge.trusted_networks */
    struct edge_rcpt_source **rcpt_sources; /* recipient lookup chain; none: every local address exists */
    size_t nrcpt_sources;
    struct edge_listener *listeners;
    size_t nlisteners;
    struct edge_ipcount *ipcount;   /* concurrent sessions per client IP */
    struct edge_session *sessions;  /* every live session (doubly linked) */
    size_t nsessions;
    char hostname[256];             /* edge.hostname or the machine's FQDN */
    bool stopping;                  /* SIGTERM seen: accept no more, finish what is in hand */
    struct event *stop_timer;       /* hard deadline for stopping */
};

/* One recipient accepted by RCPT. */
struct edge_rcpt {
    struct smtp_rcpt rcpt;          /* parsed recipient and DSN parameters */
};

/* One transaction: MAIL .. end of data. */
struct edge_tx {
    struct smtp_mail mail;          /* sender and MAIL parameters */
    struct edge_rcpt *rcpts;        /* accepted recipients */
    size_t nrcpts, rcpt_cap;
    char id[QUEUE_ID_LEN + 1];      /* queue id, given when content starts */
    struct buf content;             /* Received header + decoded content */
    size_t header_len;              /* bytes of content that are our own Received header */
    struct body_decoder dec;        /* DATA / BDAT decoder state */
    bool content_started;           /* DATA or first BDAT seen */
    bool too_big;                   /* over the size limit: parse on, store nothing */
    bool bdat;                      /* content comes in BDAT chunks */
    bool failed;                    /* a BDAT chunk failed: later chunks are discarded */
};

enum edge_state {
    ST_GREET,       /* greeting not sent yet (greet pause, or implicit TLS handshake) */
    ST_CMD,         /* reading command lines */
    ST_DATA,        /* reading DATA content */
    ST_BDAT,        /* reading a BDAT chunk */
    ST_AUTH,        /* reading AUTH continuation lines */
    ST_CLOSING,     /* flushing the last reply, then close */
};

struct edge_session {
    struct edge_server *srv;
    struct edge_listener *lst;      /* the listener that accepted it */
    struct edge_session *prev, *next; /* in srv->sessions */
    struct bufferevent *bev;        /* the connection (a TLS filter over the socket after STARTTLS) */
    struct event *timer;            /* greet pause, error sleep */
    struct event *reaper;           /* frees the session outside its own callbacks */
    struct evbuffer_cb_entry *drain_watch; /* closing over TLS: waits for the socket's buffer */
    char id[QUEUE_ID_LEN + 1];      /* session id */
    char ip[NETADDR_STRLEN];        /* client IP, printable */
    struct sockaddr_storage peer;   /* client address */
    struct log_ctx logctx;          /* session id, client, queue id, user, for log lines */
    enum edge_state state;
    char *helo;                     /* HELO/EHLO argument, sanitised; NULL before */
    bool esmtp;                     /* EHLO (not HELO) was used */
    SSL *ssl;                       /* non-NULL once TLS is on */
    char *tls_info;                 /* "TLSv1.3 with cipher ..." once the handshake is done */
    char *auth_user;                /* authenticated user, NULL if none */
    bool trusted;                   /* client address is in edge.trusted_networks */
    struct edge_tx *tx;             /* current transaction, NULL between them */
    unsigned errors;                /* protocol errors so far */
    unsigned messages;              /* messages accepted in this session */
    unsigned long long commands;    /* commands read */
    bool discard_line;              /* skipping the rest of an over-long line */
    bool waiting;                   /* an asynchronous answer (auth check, enqueue) is awaited */
    bool paused;                    /* replies held back by the error sleep */
    struct buf pending_reply;       /* the reply held back by the error sleep */
    /* BDAT chunk in progress */
    unsigned long long bdat_left;   /* octets of the chunk still to read */
    bool bdat_last;                 /* the chunk is the LAST one */
    const char *bdat_refusal;       /* non-NULL: discard the chunk, then give this reply */
    /* AUTH dialog */
    int auth_mech;                  /* 1 = PLAIN, 2 = LOGIN */
    int auth_step;                  /* LOGIN: 0 = waiting for user name, 1 = for password */
    char *auth_login_user;          /* LOGIN: user name received */
    /* RCPT waiting for the recipient lookup */
    struct smtp_rcpt pending_rcpt;  /* the recipient being looked up */
    bool lookup_inline;             /* edge_rcpt_lookup has not returned yet */
    bool lookup_answered;           /* ...and has already answered */
    enum edge_rcpt_verdict lookup_verdict;
    /* time of DATA, for the minimum data rate */
    long long data_started_ms;
    /* lifetime */
    int busy_refs;                  /* asynchronous operations whose callback has not run */
    bool dead;                      /* connection gone; free when busy_refs reaches 0 */
    bool lingering;                 /* last reply sent; discarding input until the client closes */
    long long connected_ms;
};

/* edge_server.c */
int edge_server_start(struct edge_server *srv) __attribute__((warn_unused_result));
void edge_server_stop(struct edge_server *srv);
void edge_server_free(struct edge_server *srv);
void edge_session_unlink(struct edge_session *s);
/* "mx", "submission" or "smtps". */
const char *edge_listener_kind_name(enum edge_listener_kind kind);

/* edge_session.c */
/* A session for an accepted connection; takes ownership of bev. */
struct edge_session *edge_session_new(struct edge_server *srv, struct edge_listener *lst,
                                      struct bufferevent *bev, const struct sockaddr *sa);
void edge_session_start(struct edge_session *s);
void edge_reply(struct edge_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An error reply: counts toward the error limits, may be delayed, may end the session. */
void edge_reply_error(struct edge_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void edge_session_close(struct edge_session *s, const char *why);
/* Ends the session at once, without flushing anything (a failed TLS handshake, shutdown). */
void edge_session_drop(struct edge_session *s);
void edge_session_resume(struct edge_session *s);
/* Ends an asynchronous operation; false when the session died meanwhile (and is now freed). */
bool edge_session_release(struct edge_session *s);
void edge_tx_free(struct edge_tx *tx);
/* Ends the session's transaction (if any): RSET, a refused or queued message. */
void edge_session_tx_reset(struct edge_session *s);
void edge_install_callbacks(struct edge_session *s);

/* edge_data_in.c */
void edge_cmd_data(struct edge_session *s, const char *args);
void edge_cmd_bdat(struct edge_session *s, const char *args);
/* Feeds buffered input to the content decoder; true when more input may be processed now. */
bool edge_content_input(struct edge_session *s);

/* edge_tls.c */
void edge_cmd_starttls(struct edge_session *s, const char *args);
/* Wraps the connection in TLS at once (implicit TLS listeners). */
bool edge_tls_wrap(struct edge_session *s);

/* edge_auth.c */
void edge_cmd_auth(struct edge_session *s, const char *args);
void edge_auth_line(struct edge_session *s, char *line);
bool edge_auth_offered(const struct edge_session *s);

/* edge_policy.c */
bool edge_domain_is_local(const char *domain);
bool edge_may_relay(const struct edge_session *s);
/* Relay policy for a parsed recipient (no lookup). */
enum edge_rcpt_verdict edge_relay_check(const struct edge_session *s, const struct smtp_path *p);

/* edge_rcpt.c: does a local recipient exist? A chain of sources, each asynchronous. */
typedef void edge_rcpt_done_fn(enum edge_rcpt_verdict v, void *arg);

struct edge_rcpt_source {
    const char *name;       /* for logs: "file", later "lmtp", "ldap", "james" */
    /*
     * Answers for p through done, exactly once, now or later on the loop. p stays valid until
     * then. RCPT_DUNNO passes the question to the next source.
     */
    void (*lookup)(struct edge_rcpt_source *src, const struct smtp_path *p, edge_rcpt_done_fn *done,
                   void *arg);
    void (*free)(struct edge_rcpt_source *src);
};

/* The static table (local.recipients): lines of "local@domain" or "@domain". */
struct edge_rcptdb *edge_rcptdb_load(const char *path, struct buf *err);
void edge_rcptdb_free(struct edge_rcptdb *db);
/* A source answering from that file, re-read when it changes; NULL with err if it does not load. */
struct edge_rcpt_source *edge_rcpt_file_source(const char *path, struct buf *err);
/*
 * Asks the server's sources in order; the first answer other than RCPT_DUNNO wins; when every
 * source passes (or there are none) the recipient is accepted. done may run before this returns.
 */
void edge_rcpt_lookup(struct edge_server *srv, const struct smtp_path *p, edge_rcpt_done_fn *done,
                      void *arg);

/* edge_received.c */
void edge_received_header(const struct edge_session *s, const struct edge_tx *tx, struct buf *out);
/* Appends s as text safe in a header comment: only [A-Za-z0-9.-_:@[]] kept, others as \xHH. */
void edge_header_safe(struct buf *out, const char *s, size_t max);

/* edge_main.c: runs the edge role on the loaded configuration until SIGTERM; exit status. */
int edge_main(void);

#endif
