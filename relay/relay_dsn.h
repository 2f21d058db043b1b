/*
 * relay_dsn.h - delivery status notifications (RFC 3464) and who gets them (RFC 3461).
 *
 * Pure functions: the caller gives the time, a random value, the original message and what
 * happened to each recipient; relay_dsn_build writes the complete notification, an RFC 5322
 * message with CR LF line endings, ready to be enqueued like any other mail (from the null sender
 * to m->sender). Its shape:
 *
 *   From: Mail Delivery System <MAILER-DAEMON@host>
 *   To: <sender>
 *   Subject: Undelivered Mail Returned to Sender | Delayed Mail (still being retried)
 *            | Successful Mail Delivery Report
 *   Date: Tue, 14 Nov 2023 22:13:20 +0000
 *   Message-ID: <20231114221320.<16 hex>@host>
 *   MIME-Version: 1.0
 *   Auto-Submitted: auto-replied
 *   Content-Type: multipart/report; report-type=delivery-status;
 *   	boundary="=_mxgate_<16 hex>"
 *
 *   1. text/plain: what happened to which recipient, with the remote server's reply;
 *   2. message/delivery-status: per-message and per-recipient fields (RFC 3464 §2.2, §2.3);
 *   3. the original: message/rfc822 (whole) or text/rfc822-headers (headers only), see ret.
 *
 * Messages with UTF-8 addresses use the RFC 6533 forms (message/global-delivery-status, address
 * type "utf-8", message/global, message/global-headers); info->smtputf8 then says so.
 * Text from the network or the queue (replies, addresses, ENVID, ORCPT) cannot break the
 * structure: controls become '?', a multi-line reply becomes one line, long fields are folded,
 * and no line exceeds 998 octets.
 */
#ifndef MXG_RELAY_DSN_H
#define MXG_RELAY_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edge_parse.h"     /* DSN_NOTIFY_* flags, as the queue records them */

struct buf;

/* RFC 3464 §2.3.3 Action values. */
enum dsn_action {
    DSN_ACTION_FAILED,
    DSN_ACTION_DELAYED,
    DSN_ACTION_DELIVERED,
    DSN_ACTION_RELAYED,     /* handed to a next hop that does not report DSNs */
    DSN_ACTION_EXPANDED,    /* delivered, and forwarded to further recipients */
};

/*
 * One recipient's outcome. All strings are borrowed for the call; NULL = unknown / absent
 * (a recipient whose addr is NULL is never reported).
 */
struct relay_dsn_rcpt {
    const char *addr;           /* the mailbox ("local@domain"): Final-Recipient */
    const char *orcpt;          /* ORCPT as queued, "addr-type;address" xtext-decoded */
    unsigned notify;            /* DSN_NOTIFY_* flags; 0 = NOTIFY not given */
    enum dsn_action action;
    const char *status;         /* "5.1.1"; NULL or malformed: "C.0.0"; the class C always
                                 * follows the action (failed 5, delayed 4, others 2) */
    const char *remote_mta;     /* host name of the server that answered: Remote-MTA */
    const char *diagnostic;     /* its reply as received, possibly multi-line (CR LF between
                                 * lines): "smtp; ..." when it starts with a reply code,
                                 * otherwise a local reason: "X-mxgate; ..." */
    long long last_attempt_ms;  /* Last-Attempt-Date; 0 = none */
    long long retry_until_ms;   /* Will-Retry-Until (delayed only); 0 = none */
};

/* The message being reported on. Strings and arrays are borrowed for the call. */
struct relay_dsn_msg {
    const char *reporting_mta;  /* our host name: Reporting-MTA, From, Message-ID */
    const char *sender;         /* the original envelope sender ("" = null sender) */
    const char *queue_id;       /* the original's queue id (X-Mxgate-Queue-ID, text) or NULL */
    const char *envid;          /* ENVID, xtext-decoded, or NULL: Original-Envelope-Id */
    const char *ret;            /* "FULL", "HDRS" (case-insensitive) or NULL = RET not given */
    long long arrival_ms;       /* Arrival-Date; 0 = none */
    const char *original;       /* the original message (CR LF), or NULL: no third part */
    size_t original_len;
    size_t max_full;            /* over this many bytes only the headers are returned (and
                                 * the headers are cut to it); 0 = no limit */
    const struct relay_dsn_rcpt *rcpts;
    size_t nrcpts;
    long long now_ms;           /* Date, Message-ID */
    uint64_t rnd;               /* random value: Message-ID and MIME boundary */
};

/* What the caller needs to know to send the notification. */
struct relay_dsn_info {
    size_t nreported;           /* recipients in the report (0: nothing was written) */
    enum dsn_action kind;       /* failed if any failed, else delayed if any, else delivered */
    bool full;                  /* the whole original is attached (not only its headers) */
    bool eightbit;              /* the text has 8-bit octets: enqueue with BODY=8BITMIME */
    bool smtputf8;              /* UTF-8 in addresses or headers: needs SMTPUTF8 */
    char message_id[300];       /* the Message-ID written, without angle brackets */
};

/*
 * Does a recipient with these NOTIFY flags want a DSN for this event? NEVER: no. Flags given:
 * FAILURE for failed, DELAY for delayed, SUCCESS for delivered/relayed/expanded. NOTIFY not given
 * (0): failed and delayed yes, success no (RFC 3461 §4.1 lets the MTA choose FAILURE,DELAY).
 */
bool relay_dsn_wanted(unsigned notify, enum dsn_action action);

/* May a DSN be sent to this envelope sender? Never to the null sender ("" or NULL). */
bool relay_dsn_sender_ok(const char *sender);

/*
 * Appends to out the notification about the recipients of m that want one (relay_dsn_wanted),
 * and returns how many that is. reported (NULL, or m->nrcpts entries) is set true for each
 * recipient reported; info (may be NULL) is filled. Returns 0 and appends nothing when the
 * sender is the null sender or no recipient wants a notification.
 *
 * The original is returned whole (message/rfc822) only for a report with a failed recipient and
 * RET=FULL or no RET (the choice RFC 3461 §4.3 leaves to the MTA; Postfix does the same), and
 * only if it fits max_full, has no NUL octet and no line over 998 octets; otherwise its header
 * section is returned (text/rfc822-headers). Reports without failures carry headers only
 * (RFC 3461 §4.3). Bare CR or LF in the original are written as CR LF.
 */
size_t relay_dsn_build(const struct relay_dsn_msg *m, struct buf *out, bool *reported,
                       struct relay_dsn_info *info);

/* "failed", "delayed", "delivered", "relayed", "expanded". */
const char *relay_dsn_action_name(enum dsn_action a);

#endif
