/*
 * relay_dsn.c - builds delivery status notifications: multipart/report (RFC 6522) with a
 * message/delivery-status part (RFC 3464), honouring NOTIFY, RET, ENVID and ORCPT (RFC 3461),
 * marked Auto-Submitted (RFC 3834), in RFC 6533 form when addresses are UTF-8.
 *
 * Owns nothing beyond the call: every input is borrowed, the text is appended to the caller's
 * buffer. It cannot fail (out of memory aborts in mem.h). Everything that came from the network
 * or the queue goes through one of three filters (put_clean, put_reply, put_host) and the folding
 * writer, so no CR or LF of its own reaches the output and no line exceeds 998 octets; the
 * original message is copied with its line ends made CR LF, and the MIME boundary is checked
 * against every part and drawn again until it occurs in none.
 */
#include "relay_dsn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "mem.h"

#define LINE_LIMIT 998      /* RFC 5322 §2.1.1, without the CR LF */
#define FIELD_WIDTH 78      /* where header fields are folded when they can be */
#define TEXT_WIDTH 76       /* where the human-readable text is wrapped */
#define REPLY_LIMIT 4000    /* a remote reply longer than this is cut */
#define HOST_LIMIT 253     /* the longest DNS name */

/* ---- who gets a DSN ------------------------------------------------------------------------ */

bool relay_dsn_wanted(unsigned notify, enum dsn_action action)
{
    if (notify & DSN_NOTIFY_NEVER)
        return false;
    if (notify == 0)
        return action == DSN_ACTION_FAILED || action == DSN_ACTION_DELAYED;
    switch (action) {
    case DSN_ACTION_FAILED:
        return (notify & DSN_NOTIFY_FAILURE) != 0;
    case DSN_ACTION_DELAYED:
        return (notify & DSN_NOTIFY_DELAY) != 0;
    case DSN_ACTION_DELIVERED:
    case DSN_ACTION_RELAYED:
    case DSN_ACTION_EXPANDED:
        return (notify & DSN_NOTIFY_SUCCESS) != 0;
    }
    return false;
}

bool relay_dsn_sender_ok(const char *sender)
{
    return sender != NULL && sender[0] != '\0' && strcmp(sender, "<>") != 0;
}

const char *relay_dsn_action_name(enum dsn_action a)
{
    switch (a) {
    case DSN_ACTION_FAILED:
        return "failed";
    case DSN_ACTION_DELAYED:
        return "delayed";
    case DSN_ACTION_DELIVERED:
        return "delivered";
    case DSN_ACTION_RELAYED:
        return "relayed";
    case DSN_ACTION_EXPANDED:
        return "expanded";
    }
    return "failed";
}

/* ---- text hygiene -------------------------------------------------------------------------- */

static bool has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80)
            return true;
    }
    return false;
}

static bool str_8bit(const char *s)
{
    return s != NULL && has_8bit(s, strlen(s));
}

/*
 * One-line text: CR, LF and TAB become a space, other controls and DEL '?', octets >= 0x80 are
 * kept (UTF-8 addresses) when keep_8bit, else '?'.
 */
static void put_clean(struct buf *b, const char *s, size_t n, bool keep_8bit)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' || c == '\n' || c == '\t')
            buf_putc(b, ' ');
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !keep_8bit))
            buf_putc(b, '?');
        else
            buf_putc(b, (char)c);
    }
}

/*
 * A server reply, possibly multi-line, as one ASCII line: lines trimmed and joined by one
 * space, runs of blanks squeezed, cut at REPLY_LIMIT with "...".
 */
static void put_reply(struct buf *b, const char *s)
{
    size_t start = b->len;
    bool blank = true;      /* the last octet written was a separator (or nothing was) */
    for (const char *p = s; *p != '\0'; p++) {
        if (b->len - start >= REPLY_LIMIT) {
            buf_puts(b, "...");
            return;
        }
        unsigned char c = (unsigned char)*p;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (!blank)
                buf_putc(b, ' ');
            blank = true;
            continue;
        }
        buf_putc(b, c < 0x20 || c >= 0x7f ? '?' : (char)c);
        blank = false;
    }
    if (b->len > start && b->data[b->len - 1] == ' ') {
        b->len--;
        b->data[b->len] = '\0';
    }
}

/* A host name or address literal; anything else becomes '-'. Empty or NULL: "localhost". */
static void put_host(struct buf *b, const char *s)
{
    size_t n = s == NULL ? 0 : strlen(s);
    if (n == 0) {
        buf_puts(b, "localhost");
        return;
    }
    if (n > HOST_LIMIT)
        n = HOST_LIMIT;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
        buf_putc(b, ok ? c : '-');
    }
}

/*
 * Writes text (one line, no CR/LF) as first + text, broken at spaces before width columns
 * where possible, each further line starting with cont (for header fields " ", which is the
 * folding white space that stands for the space it replaces). Runs of spaces count as one, so
 * no line is blank; a word too long for the line limit is split.
 */
static void put_folded(struct buf *out, const char *first, const char *cont, const char *text,
                       size_t width)
{
    size_t col = strlen(first);
    bool line_has_word = false;
    buf_puts(out, first);
    const char *p = text;
    for (;;) {
        const char *sp = strchr(p, ' ');
        size_t wlen = sp != NULL ? (size_t)(sp - p) : strlen(p);
        if (wlen == 0) {
            if (sp == NULL)
                break;
            p = sp + 1;
            continue;
        }
        if (line_has_word) {
            if (col + 1 + wlen > width) {
                buf_puts(out, "\r\n");
                buf_puts(out, cont);
                col = strlen(cont);
            } else {
                buf_putc(out, ' ');
                col++;
            }
        }
        while (col + wlen > LINE_LIMIT) {
            size_t room = LINE_LIMIT - col;
            buf_append(out, p, room);
            buf_puts(out, "\r\n");
            buf_puts(out, cont);
            col = strlen(cont);
            p += room;
            wlen -= room;
        }
        buf_append(out, p, wlen);
        col += wlen;
        line_has_word = true;
        if (sp == NULL)
            break;
        p = sp + 1;
    }
    buf_puts(out, "\r\n");
}

/* "Name: value" folded; value is one clean line. */
static void put_field(struct buf *out, const char *name, const char *value)
{
    char first[64];
    snprintf(first, sizeof first, "%s: ", name);
    put_folded(out, first, " ", value, FIELD_WIDTH);
}

/* RFC 5322 date-time in UTC, independent of the locale. */
static void put_date(struct buf *b, long long ms)
{
    static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 1900) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    buf_printf(b, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
               months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* RFC 3463 status "class.subject.detail", its class forced to match the action. */
static void put_status(struct buf *b, const char *status, enum dsn_action a)
{
    char cls = a == DSN_ACTION_FAILED ? '5' : a == DSN_ACTION_DELAYED ? '4' : '2';
    unsigned subj, detail;
    char c, tail;
    if (status != NULL && strlen(status) <= 9 &&
        sscanf(status, "%c.%3u.%3u%c", &c, &subj, &detail, &tail) == 3 &&
        (c == '2' || c == '4' || c == '5') && strspn(status + 2, "0123456789.") == strlen(status + 2)) {
        buf_printf(b, "%c.%u.%u", cls, subj, detail);
        return;
    }
    buf_printf(b, "%c.0.0", cls);
}

/* Does the reply start with an SMTP reply code ("550 ...", "451-...", "421")? */
static bool is_smtp_reply(const char *s)
{
    return s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' &&
           s[2] <= '9' && (s[3] == '\0' || s[3] == ' ' || s[3] == '-' || s[3] == '\r');
}

/* ---- the original message ------------------------------------------------------------------ */

/* Next line of s[*pos..n): its length without the line end; *pos moves past the end (CR LF,
 * LF or a bare CR). False at the end of the text. */
static bool next_line(const char *s, size_t n, size_t *pos, size_t *len)
{
    if (*pos >= n)
        return false;
    size_t i = *pos;
    while (i < n && s[i] != '\r' && s[i] != '\n')
        i++;
    *len = i - *pos;
    if (i < n && s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
        i += 2;
    else if (i < n)
        i++;
    *pos = i;
    return true;
}

/* Bytes of the header section (up to the empty line, which is excluded). */
static size_t header_len(const char *s, size_t n)
{
    size_t pos = 0, start = 0, len;
    while (next_line(s, n, &pos, &len)) {
        if (len == 0)
            return start;
        start = pos;
    }
    return n;
}

/* Can the whole message go into a message/rfc822 part: no NUL, no line over the limit? */
static bool fits_full(const char *s, size_t n)
{
    if (memchr(s, '\0', n) != NULL)
        return false;
    size_t pos = 0, len;
    while (next_line(s, n, &pos, &len)) {
        if (len > LINE_LIMIT)
            return false;
    }
    return true;
}

/* The message with every line end made CR LF (and one added at the end if missing). */
static void put_normalized(struct buf *b, const char *s, size_t n)
{
    size_t line = 0, next = 0, len;
    while (next_line(s, n, &next, &len)) {
        buf_append(b, s + line, len);
        buf_puts(b, "\r\n");
        line = next;
    }
}

/*
 * The header section, line ends made CR LF, NUL as '?', lines over the limit split (the rest
 * continued on a folded line), whole fields only, at most cap bytes (0: no limit).
 */
static void put_headers(struct buf *b, const char *s, size_t n, size_t cap)
{
    struct buf field = BUF_INIT;
    size_t pos = 0, start = 0, len, written = 0;
    for (;;) {
        bool more = next_line(s, n, &pos, &len);
        const char *line = s + start;
        bool cont = more && len > 0 && (line[0] == ' ' || line[0] == '\t');
        if (!cont && field.len > 0) {
            if (cap > 0 && written + field.len > cap)
                break;
            buf_append(b, field.data, field.len);
            written += field.len;
            buf_reset(&field);
        }
        if (!more)
            break;
        size_t col = 0;
        for (size_t i = 0; i < len; i++) {
            if (col == LINE_LIMIT) {
                buf_puts(&field, "\r\n ");
                col = 1;
            }
            buf_putc(&field, line[i] == '\0' ? '?' : line[i]);
            col++;
        }
        buf_puts(&field, "\r\n");
        start = pos;
    }
    buf_release(&field);
}

/* ---- the three parts ----------------------------------------------------------------------- */

struct dsn_ctx {
    const struct relay_dsn_msg *m;
    const bool *want;           /* which recipients are reported */
    enum dsn_action kind;
    struct buf host;            /* cleaned reporting host */
};

static void put_rcpt_type(struct buf *b, const char *addr)
{
    buf_puts(b, str_8bit(addr) ? "utf-8;" : "rfc822;");
    put_clean(b, addr, strlen(addr), true);
}

/* attached: what the third part holds, said in a sentence ("" when there is none). */
static void human_part(struct dsn_ctx *c, const char *attached, struct buf *out)
{
    const struct relay_dsn_msg *m = c->m;
    buf_printf(out, "This is the mail delivery system at %s.\r\n\r\n", buf_cstr(&c->host));
    if (c->kind == DSN_ACTION_FAILED) {
        buf_puts(out, "Your message could not be delivered to one or more of its recipients.\r\n"
                      "The reason is given below for each of them.\r\n");
    } else if (c->kind == DSN_ACTION_DELAYED) {
        buf_puts(out, "Your message has not been delivered yet to one or more of its\r\n"
                      "recipients. Delivery is still being attempted: you do not need to\r\n"
                      "send it again.\r\n");
    } else {
        buf_puts(out, "Your message was delivered to the recipients below, as you asked\r\n"
                      "in your delivery status request.\r\n");
    }
    buf_puts(out, attached);
    if (m->queue_id != NULL) {
        struct buf v = BUF_INIT;
        buf_puts(&v, "Queue id: ");
        put_clean(&v, m->queue_id, strlen(m->queue_id), false);
        buf_puts(out, "\r\n");
        put_folded(out, "", "    ", buf_cstr(&v), TEXT_WIDTH);
        buf_release(&v);
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (!c->want[i])
            continue;
        const struct relay_dsn_rcpt *r = &m->rcpts[i];
        struct buf v = BUF_INIT;
        buf_putc(&v, '<');
        put_clean(&v, r->addr, strlen(r->addr), true);
        buf_puts(&v, ">: ");
        static const char *const what[] = {
            [DSN_ACTION_FAILED] = "delivery failed",
            [DSN_ACTION_DELAYED] = "not delivered yet",
            [DSN_ACTION_DELIVERED] = "delivered",
            [DSN_ACTION_RELAYED] = "relayed to a server that does not send delivery reports",
            [DSN_ACTION_EXPANDED] = "delivered, and forwarded to further recipients",
        };
        buf_puts(&v, r->action <= DSN_ACTION_EXPANDED ? what[r->action] : "?");
        buf_puts(&v, " (");
        put_status(&v, r->status, r->action);
        buf_putc(&v, ')');
        if (r->action == DSN_ACTION_DELAYED && r->retry_until_ms > 0) {
            buf_puts(&v, "; trying until ");
            put_date(&v, r->retry_until_ms);
        }
        buf_puts(out, "\r\n");
        put_folded(out, "", "    ", buf_cstr(&v), TEXT_WIDTH);
        if (r->remote_mta != NULL) {
            buf_reset(&v);
            buf_puts(&v, "Remote server: ");
            put_host(&v, r->remote_mta);
            put_folded(out, "    ", "    ", buf_cstr(&v), TEXT_WIDTH);
        }
        if (r->diagnostic != NULL && r->diagnostic[0] != '\0') {
            buf_reset(&v);
            buf_puts(&v, is_smtp_reply(r->diagnostic) ? "It said: " : "Reason: ");
            put_reply(&v, r->diagnostic);
            put_folded(out, "    ", "    ", buf_cstr(&v), TEXT_WIDTH);
        }
        buf_release(&v);
    }
}

static void status_part(struct dsn_ctx *c, struct buf *out)
{
    const struct relay_dsn_msg *m = c->m;
    struct buf v = BUF_INIT;
    if (m->envid != NULL) {
        put_clean(&v, m->envid, strlen(m->envid), false);
        put_field(out, "Original-Envelope-Id", buf_cstr(&v));
    }
    buf_reset(&v);
    buf_puts(&v, "dns; ");
    buf_puts(&v, buf_cstr(&c->host));
    put_field(out, "Reporting-MTA", buf_cstr(&v));
    if (m->arrival_ms > 0) {
        buf_reset(&v);
        put_date(&v, m->arrival_ms);
        put_field(out, "Arrival-Date", buf_cstr(&v));
    }
    if (m->queue_id != NULL) {
        buf_reset(&v);
        put_clean(&v, m->queue_id, strlen(m->queue_id), false);
        put_field(out, "X-Mxgate-Queue-ID", buf_cstr(&v));
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (!c->want[i])
            continue;
        const struct relay_dsn_rcpt *r = &m->rcpts[i];
        buf_puts(out, "\r\n");
        if (r->orcpt != NULL && strchr(r->orcpt, ';') != NULL) {
            buf_reset(&v);
            put_clean(&v, r->orcpt, strlen(r->orcpt), true);
            put_field(out, "Original-Recipient", buf_cstr(&v));
        }
        buf_reset(&v);
        put_rcpt_type(&v, r->addr);
        put_field(out, "Final-Recipient", buf_cstr(&v));
        put_field(out, "Action", relay_dsn_action_name(r->action));
        buf_reset(&v);
        put_status(&v, r->status, r->action);
        put_field(out, "Status", buf_cstr(&v));
        if (r->remote_mta != NULL) {
            buf_reset(&v);
            buf_puts(&v, "dns; ");
            put_host(&v, r->remote_mta);
            put_field(out, "Remote-MTA", buf_cstr(&v));
        }
        if (r->diagnostic != NULL && r->diagnostic[0] != '\0') {
            buf_reset(&v);
            buf_puts(&v, is_smtp_reply(r->diagnostic) ? "smtp; " : "X-mxgate; ");
            put_reply(&v, r->diagnostic);
            put_field(out, "Diagnostic-Code", buf_cstr(&v));
        }
        if (r->last_attempt_ms > 0) {
            buf_reset(&v);
            put_date(&v, r->last_attempt_ms);
            put_field(out, "Last-Attempt-Date", buf_cstr(&v));
        }
        if (r->action == DSN_ACTION_DELAYED && r->retry_until_ms > 0) {
            buf_reset(&v);
            put_date(&v, r->retry_until_ms);
            put_field(out, "Will-Retry-Until", buf_cstr(&v));
        }
    }
    buf_release(&v);
}

/* splitmix64: spreads the caller's random value over the ids we derive from it. */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static bool part_has(const struct buf *part, const char *delim, size_t dlen)
{
    return part->len >= dlen && memmem(part->data, part->len, delim, dlen) != NULL;
}

/* One body part: its header fields, an empty line, the content (ending CR LF), and the CR LF
 * that belongs to the next delimiter, so the content keeps its last line end. */
static void put_part(struct buf *out, const char *boundary, const char *type, const char *descr,
                     bool eightbit, const struct buf *content)
{
    buf_printf(out, "--%s\r\nContent-Type: %s\r\nContent-Description: %s\r\n", boundary, type,
               descr);
    if (eightbit)
        buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
    buf_puts(out, "\r\n");
    if (content->len > 0)
        buf_append(out, content->data, content->len);
    buf_puts(out, "\r\n");
}

size_t relay_dsn_build(const struct relay_dsn_msg *m, struct buf *out, bool *reported,
                       struct relay_dsn_info *info)
{
    bool *want = xcalloc(m->nrcpts + 1, sizeof *want);
    size_t n = 0;
    bool any_failed = false, any_delayed = false, addr_8bit = false;
    bool sender_ok = relay_dsn_sender_ok(m->sender);
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct relay_dsn_rcpt *r = &m->rcpts[i];
        want[i] = sender_ok && r->addr != NULL && relay_dsn_wanted(r->notify, r->action);
        if (reported != NULL)
            reported[i] = want[i];
        if (!want[i])
            continue;
        n++;
        any_failed |= r->action == DSN_ACTION_FAILED;
        any_delayed |= r->action == DSN_ACTION_DELAYED;
        addr_8bit |= str_8bit(r->addr) || str_8bit(r->orcpt);
    }
    struct dsn_ctx c = {
        .m = m, .want = want, .host = BUF_INIT,
        .kind = any_failed ? DSN_ACTION_FAILED : any_delayed ? DSN_ACTION_DELAYED : DSN_ACTION_DELIVERED,
    };
    if (info != NULL) {
        memset(info, 0, sizeof *info);
        info->nreported = n;
        info->kind = c.kind;
    }
    if (n == 0) {
        free(want);
        return 0;
    }
    put_host(&c.host, m->reporting_mta);

    struct buf human = BUF_INIT, status = BUF_INIT, orig = BUF_INIT;

    /* the original: whole, headers, or nothing */
    bool have_orig = m->original != NULL && m->original_len > 0;
    bool full = false, orig_hdr_8bit = false;
    if (have_orig) {
        size_t hlen = header_len(m->original, m->original_len);
        orig_hdr_8bit = has_8bit(m->original, hlen);
        full = c.kind == DSN_ACTION_FAILED &&
               (m->ret == NULL || strcasecmp(m->ret, "HDRS") != 0) &&
               (m->max_full == 0 || m->original_len <= m->max_full) &&
               fits_full(m->original, m->original_len);
        if (full)
            put_normalized(&orig, m->original, m->original_len);
        else
            put_headers(&orig, m->original, hlen, m->max_full);
    }
    human_part(&c, !have_orig ? "" : full ? "Your message is attached.\r\n"
                                          : "The header section of your message is attached.\r\n",
               &human);
    status_part(&c, &status);
    bool human_8bit = has_8bit(human.data, human.len);
    bool status_8bit = has_8bit(status.data, status.len);
    bool orig_8bit = has_8bit(orig.data, orig.len);
    bool eightbit = human_8bit || status_8bit || orig_8bit;

    /* a boundary that occurs in no part */
    uint64_t seed = m->rnd;
    uint64_t msgid_rnd = mix(&seed);
    char boundary[40], delim[44];
    for (;;) {
        snprintf(boundary, sizeof boundary, "=_mxgate_%016llx", (unsigned long long)mix(&seed));
        int dlen = snprintf(delim, sizeof delim, "--%s", boundary);
        if (!part_has(&human, delim, (size_t)dlen) && !part_has(&status, delim, (size_t)dlen) &&
            !part_has(&orig, delim, (size_t)dlen))
            break;
    }

    /* the message header */
    struct buf v = BUF_INIT;
    buf_printf(&v, "Mail Delivery System <MAILER-DAEMON@%s>", buf_cstr(&c.host));
    put_field(out, "From", buf_cstr(&v));
    buf_reset(&v);
    buf_putc(&v, '<');
    put_clean(&v, m->sender, strlen(m->sender), true);
    buf_putc(&v, '>');
    put_field(out, "To", buf_cstr(&v));
    put_field(out, "Subject", c.kind == DSN_ACTION_FAILED ? "Undelivered Mail Returned to Sender"
                              : c.kind == DSN_ACTION_DELAYED ? "Delayed Mail (still being retried)"
                                                             : "Successful Mail Delivery Report");
    buf_reset(&v);
    put_date(&v, m->now_ms);
    put_field(out, "Date", buf_cstr(&v));
    time_t t = (time_t)(m->now_ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 1900) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    char msgid[300];
    snprintf(msgid, sizeof msgid, "%04d%02d%02d%02d%02d%02d.%016llx@%s", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned long long)msgid_rnd, buf_cstr(&c.host));
    buf_reset(&v);
    buf_printf(&v, "<%s>", msgid);
    put_field(out, "Message-ID", buf_cstr(&v));
    buf_puts(out, "MIME-Version: 1.0\r\nAuto-Submitted: auto-replied\r\n");
    const char *rtype = addr_8bit ? "global-delivery-status" : "delivery-status";
    buf_printf(out, "Content-Type: multipart/report; report-type=%s;\r\n\tboundary=\"%s\"\r\n",
               rtype, boundary);
    if (eightbit)
        buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
    buf_puts(out, "\r\nThis is a MIME-encapsulated delivery status notification.\r\n\r\n");

    /* the parts */
    put_part(out, boundary, human_8bit ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii",
             "Notification", human_8bit, &human);
    buf_reset(&v);
    buf_printf(&v, "message/%s", rtype);
    put_part(out, boundary, buf_cstr(&v), "Delivery report", status_8bit, &status);
    if (have_orig) {
        const char *type = full ? (orig_hdr_8bit ? "message/global" : "message/rfc822")
                                : (orig_hdr_8bit ? "message/global-headers" : "text/rfc822-headers");
        const char *descr = full ? "Undelivered Message"
                            : c.kind == DSN_ACTION_FAILED ? "Undelivered Message Headers"
                            : c.kind == DSN_ACTION_DELAYED ? "Delayed Message Headers"
                                                           : "Delivered Message Headers";
        put_part(out, boundary, type, descr, orig_8bit, &orig);
    }
    buf_printf(out, "--%s--\r\n", boundary);

    if (info != NULL) {
        info->full = full;
        info->eightbit = eightbit;
        info->smtputf8 = addr_8bit || orig_hdr_8bit || str_8bit(m->sender);
        snprintf(info->message_id, sizeof info->message_id, "%s", msgid);
    }
    buf_release(&v);
    buf_release(&human);
    buf_release(&status);
    buf_release(&orig);
    buf_release(&c.host);
    free(want);
    return n;
}
