/*
 * filter_milter.h - the MTA side of the Sendmail 8 milter protocol, version 6 (as Postfix and
 * Sendmail speak it), for the edge: a chain of milters per SMTP session on a libevent loop.
 *
 * Two layers:
 * - the codec (filter_milter_proto.c): encodes MTA commands, splits the byte stream into packets,
 *   decodes replies and modification requests, checks the option negotiation; no I/O.
 * - the chain (filter_milter.c): one struct milter_session per SMTP session, one connection per
 *   configured milter, timeouts, what each reply means for the session.
 *
 * Use:
 *   struct milter_session *ms = milter_session_new(base, confs, n, &info);  // starts connecting
 *   milter_connect(ms, "client.example", (struct sockaddr *)&peer, got, sess);
 *   ... in got(): MV_CONTINUE / MV_ACCEPT: go on; else answer the SMTP command with v->reply ...
 *   milter_helo(); milter_mail(); milter_rcpt() per recipient; milter_data(); milter_header() per
 *   header; milter_eoh(); milter_body() per chunk; milter_eom(ms, queue_id, ...) -> v->mods;
 *   milter_abort() on RSET or a new transaction; milter_free() at the end (sends QUIT).
 *
 * Every event function is asynchronous: done is called exactly once, from the event loop (never
 * from inside the call), unless milter_free() comes first (then never). One event at a time: a
 * call while an event is pending is a broken invariant (aborts). done may call the next event or
 * milter_free(). The verdict, its reply and its modifications stay valid until the next event
 * call or milter_free().
 *
 * The chain (Postfix semantics, "smtpd_milters"):
 * - Each event goes to each milter in configuration order. A milter gets no event that it asked
 *   not to get (SMFIP_NOCONNECT, NOHELO, NOMAIL, NORCPT, NODATA, NOHDRS, NOEOH, NOBODY,
 *   NOUNKNOWN), though it still gets that stage's macros; for the SMFIP_NR_* stages it asked for,
 *   the command is sent without waiting for a reply. SMFIR_SKIP in reply to a body chunk: no
 *   more body chunks for that milter in this message.
 * - The first milter whose reply is not "continue" ends the event for the chain: the milters
 *   after it do not see it. ACCEPT does not end it: ACCEPT means that milter is done, for the
 *   whole session when said at CONNECT or HELO (and its connection is closed), else for the
 *   current message; the other milters still run. The chain's verdict is MV_ACCEPT when no
 *   milter is left that wants the rest of the message (or, at CONNECT, HELO and unknown commands,
 *   of the session), else MV_CONTINUE. At EOM a message that no milter refused is MV_ACCEPT, or
 *   MV_QUARANTINE when a milter asked for it (SMFIR_QUARANTINE).
 * - A milter still connecting or negotiating when an event reaches it holds the chain until it is
 *   ready or has failed (connect_timeout, then command_timeout).
 * - REJECT, TEMPFAIL or a reply code at CONNECT or HELO holds for the whole session: every later
 *   event returns the same verdict (Postfix rejects every later command). At RCPT they reject that
 *   recipient only. At MAIL, DATA, a header, EOH, body or EOM they end the message: every later
 *   event of the message returns the same verdict until milter_abort() or the next milter_mail().
 * - DISCARD (not allowed at CONNECT or HELO: a protocol error there) makes every later event of
 *   the message return MV_DISCARD: accept the message and drop it.
 * - SMFIR_SHUTDOWN and SMFIR_CONN_FAIL: MV_SHUTDOWN (421, close the SMTP session) from then on.
 * - milter_eom() ends the transaction: milters that saw MAIL but not EOM (the event was ended
 *   before them, or they had accepted earlier) get SMFIC_ABORT, and the next milter_mail() starts
 *   afresh. Every milter sees the message as the client sent it; the modifications of all
 *   milters come back in order (milter order, then the order each sent them), for the caller to
 *   apply (Postfix instead lets each milter see the edits of the ones before it).
 *
 * Failures: a refused or timed-out connect, a command or content timeout, EOF, a write error, a
 * malformed or oversized packet, a reply that is not valid for the event (including a
 * modification whose SMFIF_* action was not negotiated) make that milter failed: its connection
 * is closed at once (the descriptor by libevent on the next loop turn) and its on_error applies. MILTER_ACCEPT: the milter is skipped for the rest
 * of the session, its half-received modifications dropped. MILTER_TEMPFAIL: MV_TEMPFAIL "451
 * 4.7.1 Service unavailable - try again later", MILTER_REJECT: MV_REJECT "550 5.7.1 Service
 * unavailable", for this event and every later one of the session (Postfix's
 * milter_default_action). Each failure is logged at warn, with the milter's text sanitised.
 *
 * Macros (SMFIC_MACRO) go before each stage's command. Without a list from the milter (v6
 * SMFIR_SETSYMLIST in the negotiation reply), each stage sends Postfix's default names that have a
 * value:
 *   CONNECT  j {daemon_name} {daemon_addr} {daemon_port} v _ {client_addr} {client_name}
 *            {client_port} {client_ptr}
 *   HELO     s {tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}
 *   MAIL     i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}
 *   RCPT     {rcpt_addr} {rcpt_host} {rcpt_mailer}
 *   DATA     i
 *   EOH      (none)
 *   EOM      i
 * The session fills j, {daemon_*}, v from the info, s and the client's and the envelope's from
 * the events ({rcpt_*} cleared at MAIL), i from milter_eom() (removed when the transaction
 * ends); the caller sets the others (TLS, AUTH, {mail_mailer}...) with milter_macro_set(). A
 * milter's own list for a stage replaces the default one; names may be written "x", "{x}" or
 * "{long}" / "long".
 *
 * Endpoints, as Postfix and Sendmail write them: "inet:port@host", "inet:host:port",
 * "inet6:port@host", "unix:/path", "local:/path". The host must be an IP address (or
 * "localhost", meaning 127.0.0.1): nothing is resolved on the loop.
 */
#ifndef MXG_FILTER_MILTER_H
#define MXG_FILTER_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <libmilter/mfapi.h>
#include <libmilter/mfdef.h>

#include "buf.h"
#include "log.h"

struct event_base;

/* ---- configuration ---- */

enum milter_default { MILTER_TEMPFAIL, MILTER_ACCEPT, MILTER_REJECT };

/* One milter. Timeouts in milliseconds; 0 (or less) takes Postfix's default. */
struct milter_conf {
    const char *name;               /* for logs and verdicts */
    const char *socket;             /* endpoint, see above */
    long long connect_timeout;      /* TCP/unix connect (default 30 s) */
    long long command_timeout;      /* negotiation and each CONNECT..DATA command (default 30 s) */
    long long content_timeout;      /* each header, EOH, body chunk and EOM (default 300 s) */
    enum milter_default on_error;   /* what a failure of this milter means */
};

#define MILTER_CONNECT_TIMEOUT_DEFAULT 30000
#define MILTER_COMMAND_TIMEOUT_DEFAULT 30000
#define MILTER_CONTENT_TIMEOUT_DEFAULT 300000

/* Whether conf->socket is a valid endpoint; if not, err gets "milter NAME: reason". */
bool milter_conf_check(const struct milter_conf *conf, struct buf *err) __attribute__((warn_unused_result));

/* What the session knows before the client speaks; strings are copied. */
struct milter_info {
    const char *myhostname;         /* macro j */
    const char *daemon_name;        /* {daemon_name}: the listener's name; NULL: none */
    const char *daemon_addr;        /* {daemon_addr}; NULL: none */
    const char *daemon_port;        /* {daemon_port}; NULL: none */
    const char *version;            /* v; NULL: "mxgate" */
    const struct log_ctx *log;      /* context of the session's log lines; must outlive it; may be NULL */
};

/* ---- verdicts ---- */

enum milter_verdict_action {
    MV_CONTINUE,    /* go on */
    MV_ACCEPT,      /* go on; no milter wants more of this message (or session) */
    MV_REJECT,      /* answer reply (5xx) */
    MV_TEMPFAIL,    /* answer reply (4xx) */
    MV_DISCARD,     /* accept the message, then drop it */
    MV_REPLYCODE,   /* answer reply, the milter's own 4xx or 5xx */
    MV_QUARANTINE,  /* milter_eom() only: accept the message and hold it; reason in quarantine */
    MV_SHUTDOWN,    /* answer reply (421) and close the SMTP session */
};

/* Longest reply kept, NUL included: an SMTP reply line without its CRLF (RFC 5321 §4.5.3.1.5). */
#define MILTER_REPLY_MAX 511

enum milter_mod_type {
    MM_ADDHEADER,       /* append header name: value */
    MM_INSHEADER,       /* insert header name: value at index (0 = before the first header) */
    MM_CHGHEADER,       /* change the index-th (1 = first) header called name; value "" = delete it */
    MM_CHGFROM,         /* new envelope sender name, ESMTP args value (NULL: none) */
    MM_ADDRCPT,         /* add recipient name */
    MM_ADDRCPT_PAR,     /* add recipient name with ESMTP args value (NULL: none) */
    MM_DELRCPT,         /* remove recipient name */
    MM_REPLBODY,        /* replace the body by body (all of the milter's chunks, concatenated) */
    MM_QUARANTINE,      /* hold the message; reason in value */
};

/* One modification asked for at EOM. Strings are as the milter sent them (NUL-free). Header
 * values come without the leading space after the colon, which the caller adds when it writes
 * the header. */
struct milter_mod {
    enum milter_mod_type type;
    const char *milter;         /* the conf name of the milter that asked */
    uint32_t index;
    char *name;
    char *value;
    struct buf body;            /* MM_REPLBODY */
};

struct milter_verdict {
    enum milter_verdict_action action;
    int code;                           /* SMTP code of reply, 0 for none */
    char reply[MILTER_REPLY_MAX];       /* "550 5.7.1 text" (no CRLF) for REJECT, TEMPFAIL, REPLYCODE,
                                         * SHUTDOWN; "" otherwise */
    const char *milter;                 /* the conf name of the milter that decided; NULL if none did */
    bool failed;                        /* the verdict is that milter's on_error, not its reply */
    const char *quarantine;             /* MV_QUARANTINE: the (first) reason, sanitised */
    const struct milter_mod *mods;      /* milter_eom(): modifications, in order; also when the
                                         * verdict is not an acceptance (then ignore them) */
    size_t nmods;
};

/* ---- the chain ---- */

struct milter_session;

typedef void milter_done_fn(struct milter_session *s, const struct milter_verdict *v, void *arg);

/*
 * Starts connecting to each of the n milters (in parallel, each then negotiating). confs (and
 * their strings) must outlive the session. A milter whose endpoint is invalid counts as failed.
 */
struct milter_session *milter_session_new(struct event_base *base, const struct milter_conf *confs, size_t n,
                                          const struct milter_info *info);
/* Sends QUIT to each milter still connected, closes everything; no callback is called after
 * this. NULL is a no-op. May be called from done. */
void milter_free(struct milter_session *s);

/* Sets (value non-NULL) or removes a macro for the following stages ("{auth_authen}", "i"...). */
void milter_macro_set(struct milter_session *s, const char *name, const char *value);

/* The client connected. hostname: its verified name, or NULL ("[addr]" is sent, as Postfix
 * does); client NULL or not IPv4/IPv6/unix: family unknown. */
void milter_connect(struct milter_session *s, const char *hostname, const struct sockaddr *client,
                    milter_done_fn *done, void *arg);
void milter_helo(struct milter_session *s, const char *helo, milter_done_fn *done, void *arg);
/* sender with its angle brackets ("<a@b>", "<>"), then nargs ESMTP parameters ("SIZE=10"). Starts
 * a new transaction (aborting one still open). */
void milter_mail(struct milter_session *s, const char *sender, const char *const *args, size_t nargs,
                 milter_done_fn *done, void *arg);
void milter_rcpt(struct milter_session *s, const char *rcpt, const char *const *args, size_t nargs,
                 milter_done_fn *done, void *arg);
void milter_data(struct milter_session *s, milter_done_fn *done, void *arg);
/* One header: name without the colon, value as it follows "name:" minus one leading space. */
void milter_header(struct milter_session *s, const char *name, const char *value, milter_done_fn *done, void *arg);
void milter_eoh(struct milter_session *s, milter_done_fn *done, void *arg);
/* Body bytes, CRLF line ends, unstuffed; any length (sent in chunks of MILTER_CHUNK_SIZE). */
void milter_body(struct milter_session *s, const void *chunk, size_t len, milter_done_fn *done, void *arg);
/* End of message; queue_id (macro i) may be NULL. The verdict carries the modifications. */
void milter_eom(struct milter_session *s, const char *queue_id, milter_done_fn *done, void *arg);
/* An SMTP command the server does not know (SMFIC_UNKNOWN). */
void milter_unknown(struct milter_session *s, const char *line, milter_done_fn *done, void *arg);
/* RSET, or a transaction ended early: SMFIC_ABORT to the milters that saw MAIL. Not while an
 * event is pending. */
void milter_abort(struct milter_session *s);

/* How many milters still have an open connection (for tests and metrics). */
size_t milter_session_connected(const struct milter_session *s);

/* ---- the codec ---- */

/* What this side offers in the negotiation: all v6 actions and every protocol step but
 * SMFIP_RCPT_REJ (rejected recipients are not sent) and SMFIP_HDR_LEADSPC. */
#define MILTER_MY_VERSION SMFI_PROT_VERSION
#define MILTER_MY_ACTIONS SMFI_CURR_ACTS
#define MILTER_MY_PROTO (SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOBODY | \
                         SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NR_HDR | SMFIP_NOUNKNOWN | SMFIP_NODATA | \
                         SMFIP_SKIP | SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT | \
                         SMFIP_NR_DATA | SMFIP_NR_UNKN | SMFIP_NR_EOH | SMFIP_NR_BODY)

/* Largest reply packet (its length field) accepted, and largest replaced body per milter. */
#define MILTER_PACKET_MAX (1024 * 1024)
#define MILTER_REPLBODY_MAX (64 * 1024 * 1024)

/* Number of macro stages (SMFIM_CONNECT..SMFIM_EOH). */
#define MILTER_STAGES (SMFIM_LAST + 1)

enum milter_perr {
    MILTER_P_OK,
    MILTER_P_MORE,          /* milter_frame(): not a whole packet yet */
    MILTER_P_ZERO,          /* length 0: no command byte */
    MILTER_P_TOOBIG,        /* length over the bound */
    MILTER_P_SHORT,         /* data ends before a fixed-size field */
    MILTER_P_TRAILING,      /* bytes after the last field */
    MILTER_P_NONUL,         /* a string without its terminating NUL */
    MILTER_P_REPLYCODE,     /* SMFIR_REPLYCODE text is not "4xx/5xx[ x.y.z] text" */
    MILTER_P_UNKNOWN,       /* unknown reply command */
    MILTER_P_TEXT,          /* empty or forbidden bytes in a header name/value or an address */
    MILTER_P_VERSION,       /* negotiation: version outside 2..6 */
    MILTER_P_ACTIONS,       /* negotiation: actions that were not offered */
    MILTER_P_SYMLIST,       /* negotiation: macro lists without SMFIF_SETSYMLIST */
};

/* A short constant description ("packet length 0"...). */
const char *milter_perr_str(enum milter_perr e);

/* One reply packet, decoded. Strings point into the packet (which must outlive this). */
struct milter_reply {
    char cmd;                               /* SMFIR_*, or SMFIC_OPTNEG */
    uint32_t version, actions, proto;       /* OPTNEG */
    const char *symlist[MILTER_STAGES];     /* OPTNEG: the milter's macro list per stage, or NULL */
    uint32_t index;                         /* INSHEADER (0 = top), CHGHEADER (1 = first; 0 sent is 1) */
    const char *name;                       /* header name; the address of CHGFROM, ADDRCPT(_PAR), DELRCPT */
    const char *value;                      /* header value; ESMTP args of CHGFROM, ADDRCPT_PAR (NULL:
                                             * none); QUARANTINE reason */
    const unsigned char *body;              /* REPLBODY chunk */
    size_t bodylen;
    int code;                               /* REPLYCODE: the SMTP code */
    char reply[MILTER_REPLY_MAX];           /* REPLYCODE: one line "550 5.7.1 text", sanitised */
};

/*
 * Looks at the packet at the front of a byte stream: OK when all of it (4 + *len bytes) is there,
 * else MORE, ZERO or TOOBIG (*len > max). *len gets the length field (command byte included) as
 * soon as its 4 bytes are there.
 */
enum milter_perr milter_frame(const unsigned char *p, size_t n, size_t max, uint32_t *len);
/* Decodes a packet's command byte and data (pkt, len = the length field). */
enum milter_perr milter_decode(const unsigned char *pkt, size_t len, struct milter_reply *r);
/*
 * Checks a decoded OPTNEG reply against what was offered: VERSION, ACTIONS, SYMLIST. *proto
 * gets the milter's protocol flags limited to those offered.
 */
enum milter_perr milter_negotiate(const struct milter_reply *r, uint32_t my_actions, uint32_t my_proto,
                                  uint32_t *proto);
/*
 * Validates and normalises a reply code text (one line or CRLF-separated lines "550-..." /
 * "550 ..."): same 4xx/5xx code on each line, optional enhanced code of the same class (x.7.1
 * supplied when absent), Sendmail's "%%" unescaped; out gets one line, the lines' texts joined
 * by spaces, bytes outside printable ASCII as '?', cut to fit.
 */
enum milter_perr milter_replycode(const char *text, int *code, char out[MILTER_REPLY_MAX]);

/* Encoders: each appends one whole packet to b. */
void milter_enc_optneg(struct buf *b, uint32_t version, uint32_t actions, uint32_t proto);
/* SMFIC_MACRO for stage command cmd: names[i] = values[i] pairs. */
void milter_enc_macros(struct buf *b, char cmd, const char *const *names, const char *const *values, size_t n);
/* SMFIC_CONNECT: hostname, then family '4' / '6' (an IPv4-mapped address as '4') with port and
 * address, 'L' with port 0 and path, or 'U' alone. */
void milter_enc_connect(struct buf *b, const char *hostname, const struct sockaddr *sa);
void milter_enc_helo(struct buf *b, const char *helo);
/* SMFIC_MAIL or SMFIC_RCPT: the address then each argument, each NUL-terminated. */
void milter_enc_envelope(struct buf *b, char cmd, const char *addr, const char *const *args, size_t nargs);
void milter_enc_header(struct buf *b, const char *name, const char *value);
/* SMFIC_BODY or SMFIC_BODYEOB with raw data (n <= MILTER_CHUNK_SIZE for BODY). */
void milter_enc_body(struct buf *b, char cmd, const void *data, size_t n);
/* SMFIC_UNKNOWN: the command line. */
void milter_enc_unknown(struct buf *b, const char *line);
/* A command without data: SMFIC_ABORT, SMFIC_DATA, SMFIC_EOH, SMFIC_QUIT, SMFIC_QUIT_NC. */
void milter_enc_cmd(struct buf *b, char cmd);

/* Modifications in the order they came; a zeroed struct is empty. */
struct milter_mods {
    struct milter_mod *v;
    size_t n, cap;
};
/* The SMFIF_ action that reply cmd needs as a modification, and its type; 0 for any other reply. */
uint32_t milter_mod_action(char cmd, enum milter_mod_type *type);
/*
 * Appends the decoded modification r of milter (kept as a pointer), strings copied, a quarantine
 * reason sanitised. A body chunk goes onto that milter's replacement body, *replbody (1 + its
 * index, 0 before the first chunk, updated); false when it would grow over MILTER_REPLBODY_MAX.
 */
bool milter_mods_add(struct milter_mods *mm, const struct milter_reply *r, const char *milter, size_t *replbody);
/* Frees the modifications from index k on (k = 0: all; the array is kept for reuse). */
void milter_mods_truncate(struct milter_mods *mm, size_t k);
void milter_mods_release(struct milter_mods *mm);

/* Macro values under canonical names ("x", "{long}"); a zeroed struct is empty. */
struct milter_macros {
    struct { char *name, *value; } *v;
    size_t n;
};
#define MILTER_MACROS_MAX 64    /* names sent per stage at most */
/* Sets (value non-NULL, copied) or removes name, written "x", "{x}", "long" or "{long}". */
void milter_macros_set(struct milter_macros *mm, const char *name, const char *value);
const char *milter_macros_get(const struct milter_macros *mm, const char *name);
void milter_macros_release(struct milter_macros *mm);
/* SMFIC_MACRO for stage command cmd with the names of list (separated by spaces or commas) that
 * have a value, in list order; nothing when none has. */
void milter_enc_stage_macros(struct buf *b, char cmd, const char *list, const struct milter_macros *mm);

/* Parses an endpoint (see the top of this file); false with a constant reason in why. */
bool milter_endpoint(const char *spec, struct sockaddr_storage *ss, socklen_t *len, const char **why);
/* The protocol's view of a client address: returns SMFIA_INET (IPv4-mapped IPv6 too),
 * SMFIA_INET6, SMFIA_UNIX (addr = the path) or SMFIA_UNKNOWN (addr = ""), with the port. */
char milter_addr(const struct sockaddr *sa, char *addr, size_t addrlen, unsigned *port);

#endif
