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
struct verify_source;
struct edge_screen;
struct edge_screen_state;
struct edge_filters;
struct edge_tx_filters;
struct edge_milters;
struct milter_session;
struct milter_verdict;
struct dns;

enum edge_listener_kind { LISTENER_MX, LISTENER_SUBMISSION, LISTENER_SMTPS };

/* What screening at connect decided (edge_screen.c), for logs and counters. */
enum screen_verdict {
    SCREEN_TRUSTED,     /* edge.trusted_networks: not screened */
    SCREEN_ALLOWED,     /* screen.allow */
    SCREEN_DENIED,      /* screen.deny: refused */
    SCREEN_RATE,        /* over screen.connection_rate_limit: refused */
    SCREEN_CACHED,      /* passed recently (Redis) */
    SCREEN_PASS,        /* passed the tests */
    SCREEN_DNSWL,       /* allowlisted by DNSWL score */
    SCREEN_PREGREET,    /* talked before the greeting */
    SCREEN_DNSBL,       /* DNSBL score over the threshold */
    SCREEN_NVERDICTS
};

/* What the policy and the recipient lookup say of one RCPT. */
enum edge_rcpt_verdict {
    RCPT_ACCEPT,            /* the recipient exists (or relaying is allowed) */
    RCPT_RELAY_DENIED,      /* 554 5.7.1 */
    RCPT_UNKNOWN_USER,      /* 550 5.1.1 */
    RCPT_TEMPFAIL,          /* a source could not answer: 450 4.3.0 */
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
    struct verify_source **rcpt_sources; /* recipient lookup chain (local.verify); none: every local address exists */
    size_t nrcpt_sources;
    bool rcpt_closed;               /* the sources are gone (shutting down): lookups answer 450 */
    struct edge_listener *listeners;
    size_t nlisteners;
    struct edge_ipcount *ipcount;   /* concurrent sessions per client IP */
    struct edge_screen_state *screen; /* screening: lists, rate counters, verdict counts */
    struct dns *dns;                /* resolver for screening and DKIM keys */
    struct edge_filters *filters;   /* SPF, DKIM, Authentication-Results */
    struct edge_milters *milters;   /* milter.mx and milter.submission chains */
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
    struct edge_tx_filters *filters; /* SPF answer, DKIM verification in progress */
    void *milter_walk;              /* the milters' walk through the content (edge_milter.c) */
    char *quarantine;               /* a milter asked to hold it: the repository name */
    char *quarantine_reason;        /* ...and why */
};

enum edge_state {
    ST_GREET,       /* greeting not sent yet (screening, or implicit TLS handshake) */
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
    struct event *timer;            /* greet wait, error sleep */
    struct edge_screen *screen;     /* screening in progress (before the greeting), else NULL */
    struct milter_session *milter;  /* the milter chain, NULL without milters */
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
/* Asks the milters about the client (if any), then greets it. */
void edge_session_greet(struct edge_session *s);
/* Sends the 220 greeting and starts reading commands. */
void edge_session_greet_now(struct edge_session *s);
/* The reply to HELO/EHLO, once the milters agree. */
void edge_helo_reply(struct edge_session *s);
/* Keeps s->pending_rcpt in the transaction and answers 250. */
void edge_rcpt_add(struct edge_session *s);
/* Appends a recipient to tx (taking over r's contents). */
void edge_tx_add_rcpt(struct edge_tx *tx, struct smtp_rcpt *r);
/* MAIL and RCPT arguments ("FROM:<a@b> SIZE=1") parsed under the session's limits and offer. */
bool edge_parse_mail(const struct edge_session *s, const char *args, struct smtp_mail *out,
                     struct smtp_parse_err *err);
bool edge_parse_rcpt(const struct edge_session *s, const char *args, struct smtp_rcpt *out,
                     struct smtp_parse_err *err);
void edge_reply(struct edge_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An error reply: counts toward the error limits, may be delayed, may end the session. */
void edge_reply_error(struct edge_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void edge_session_close(struct edge_session *s, const char *why);
/* Ends the session at once, without flushing anything (a failed TLS handshake, shutdown). */
void edge_session_drop(struct edge_session *s);
void edge_session_resume(struct edge_session *s);
/* Starts an asynchronous operation: the session stays alive and reads no command until it ends. */
void edge_session_wait(struct edge_session *s);
/* Ends it; false when the session died meanwhile (and is now freed). */
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

/*
 * edge_rcpt.c: does a local recipient exist? The sources of local.verify asked in order
 * (lib/verify.h), the answers of remote ones cached in Redis.
 */
typedef void edge_rcpt_done_fn(enum edge_rcpt_verdict v, void *arg);

/* The static table (local.recipients): lines of "local@domain" or "@domain". */
struct edge_rcptdb *edge_rcptdb_load(const char *path, struct buf *err);
void edge_rcptdb_free(struct edge_rcptdb *db);
/* A source answering from that file, re-read when it changes; NULL with err if it does not load. */
struct verify_source *edge_rcpt_file_source(const char *path, struct buf *err);
/*
 * The sources local.verify names, built from the settings (nothing is contacted yet); false with
 * a message in err for a source that cannot be built. "file" without local.recipients is left
 * out. hostname is the name the LMTP probe gives in LHLO.
 */
bool edge_rcpt_sources_new(struct event_base *base, const char *hostname, struct verify_source ***out, size_t *n,
                           struct buf *err) __attribute__((warn_unused_result));
void edge_rcpt_sources_free(struct verify_source **v, size_t n);
/*
 * Asks the server's sources in order until one knows the address (RCPT_ACCEPT); none knows it:
 * RCPT_UNKNOWN_USER; one cannot answer: RCPT_TEMPFAIL; no sources: RCPT_ACCEPT. done may run
 * before this returns.
 */
void edge_rcpt_lookup(struct edge_server *srv, const struct smtp_path *p, edge_rcpt_done_fn *done,
                      void *arg);

/* edge_screen.c: screening at connect, MX listeners only. */
bool edge_screen_init(struct edge_server *srv, struct buf *err) __attribute__((warn_unused_result));
void edge_screen_fini(struct edge_server *srv);
/* Screens a new session; false: greet it now; true: screening greets or refuses it later. */
bool edge_screen_start(struct edge_session *s);
/* The client sent something while being screened. */
void edge_screen_input(struct edge_session *s);
/* Drops the session's screening state (when it goes away). */
void edge_screen_free(struct edge_session *s);

/* edge_filters.c: SPF, DKIM, Authentication-Results (see the file's header). */
bool edge_filters_init(struct edge_server *srv, struct buf *err) __attribute__((warn_unused_result));
void edge_filters_fini(struct edge_server *srv);
void edge_tx_filters_free(struct edge_tx *tx);
/* At MAIL: true when a check is running and will end with edge_mail_checked(). */
bool edge_filters_mail(struct edge_session *s);
/* After each piece of content has been decoded into tx->content. */
void edge_filters_content(struct edge_session *s);
/* The content is complete: finishes the checks, edits the header, then edge_content_checked(). */
void edge_filters_end(struct edge_session *s);
/* edge_session.c: ends MAIL: 250, or the refusal (printf-style) when not NULL. */
void edge_mail_checked(struct edge_session *s, const char *refusal_fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* edge_data_in.c: the filters are done with the content: queue it. */
void edge_content_checked(struct edge_session *s);

/* edge_milter.c: the milter chain at each stage; each returns true when it will answer later. */
bool edge_milters_init(struct edge_server *srv, struct buf *err) __attribute__((warn_unused_result));
void edge_milters_fini(struct edge_server *srv);
/* Checks milter endpoints; false with one line per bad entry. */
bool edge_milters_check(const struct strlist *l, struct buf *err);
bool edge_milter_connect(struct edge_session *s);
bool edge_milter_helo(struct edge_session *s);
bool edge_milter_mail(struct edge_session *s);
bool edge_milter_rcpt(struct edge_session *s);
bool edge_milter_content(struct edge_session *s);
void edge_milter_abort(struct edge_session *s);
void edge_milter_free(struct edge_session *s);
/* edge_milter_mods.c */
/* Applies the modifications; false when the message is gone (answered already). */
bool edge_milter_apply(struct edge_session *s, const struct milter_verdict *v);
/* Offset of the empty line ending the header section of tx->content. */
size_t edge_tx_header_end(const struct edge_tx *tx);
/* Offset just after the header field starting at offset i (its continuation lines included). */
size_t edge_tx_field_end(const struct edge_tx *tx, size_t i, size_t hdr_end);
/* The message goes to the quarantine/<reason> repository instead of delivery. */
void edge_tx_quarantine(struct edge_tx *tx, const char *reason);

/* edge_received.c */
void edge_received_header(const struct edge_session *s, const struct edge_tx *tx, struct buf *out);
/* Appends s as text safe in a header comment: only [A-Za-z0-9.-_:@[]] kept, others as \xHH. */
void edge_header_safe(struct buf *out, const char *s, size_t max);

/* edge_main.c: runs the edge role on the loaded configuration until SIGTERM; exit status. */
int edge_main(void);

#endif
