/*
 * test_filter_milter.c - the milter chain (filters/filter_milter.c) against real milters and a
 * scripted one (tests/unit/support/milter_peers.c):
 * - spamass-milter + spamd: GTUBE is refused with the milter's own 550 reply; a clean message
 *   passes with the X-Spam-* headers it adds;
 * - clamav-milter + clamd (EICAR signature written by sigtool): EICAR attached is refused, a clean
 *   message passes;
 * - a milter that never answers, answers garbage, hangs up, or is not there: each on_error within
 *   its timeout, the connection closed (file descriptors counted);
 * - the scripted milter: every modification decoded, progress extending the content timeout,
 *   modifications that were not negotiated, protocol flags (NO*, NR_*), macro lists, SKIP,
 *   ACCEPT / REJECT / DISCARD / reply codes / SHUTDOWN and their stickiness, a chain of two.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "buf.h"
#include "clock.h"
#include "filter_milter.h"
#include "support/milter_peers.h"
#include "support/peer.h"

/* What one event's done callback reported. */
struct got {
    int done;
    struct milter_verdict v;
    bool free_in_done;          /* milter_free() from inside done */
};

static void got_cb(struct milter_session *s, const struct milter_verdict *v, void *arg)
{
    struct got *g = arg;
    g->done++;
    g->v = *v;
    if (g->free_in_done)
        milter_free(s);
}

/* Runs base's loop until g's done callback ran (ms at most); how many times it ran. */
static int wait_done(struct event_base *base, const struct got *g, long long ms)
{
    tp_run_count(base, &g->done, 1, ms);
    return g->done;
}

static const struct milter_info info = { .myhostname = "mx.test", .daemon_name = "mx", .daemon_addr = "127.0.0.1",
                                         .daemon_port = "25" };

static struct milter_conf conf_for(const char *name, const char *spec, enum milter_default on_error)
{
    return (struct milter_conf){ .name = name, .socket = spec, .connect_timeout = 2000, .command_timeout = 5000,
                                 .content_timeout = 10000, .on_error = on_error };
}

/* One event, waited for (10 s at most). */
#define EV(base, g, call)                                                                                         \
    do {                                                                                                          \
        memset(&(g), 0, sizeof(g));                                                                               \
        call;                                                                                                     \
        assert_int_equal(wait_done((base), &(g), 10000), 1);                                                      \
    } while (0)

static bool peer_ended(void *arg)
{
    const struct milter_peer *p = arg;
    return p->eof;
}

static struct sockaddr_in client_addr(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(40000) };
    inet_pton(AF_INET, "192.0.2.10", &a.sin_addr);
    return a;
}

/*
 * Sends a whole SMTP transaction (connect, helo, mail, rcpt, data, each header of msg, eoh, body,
 * eom) and stops at the first verdict that is neither CONTINUE nor ACCEPT; *stage names where.
 */
static void run_message(struct event_base *base, struct milter_session *s, const char *msg, struct got *g,
                        const char **stage, bool greet)
{
    struct sockaddr_in ca = client_addr();
    const char *args[] = { "BODY=8BITMIME" };
#define STEP(name, call)                                                                                          \
    do {                                                                                                          \
        *stage = name;                                                                                            \
        EV(base, *g, call);                                                                                       \
        if (g->v.action != MV_CONTINUE && g->v.action != MV_ACCEPT)                                               \
            return;                                                                                               \
    } while (0)
    if (greet) {
        STEP("connect", milter_connect(s, "client.test", (struct sockaddr *)&ca, got_cb, g));
        STEP("helo", milter_helo(s, "client.test", got_cb, g));
    }
    STEP("mail", milter_mail(s, "<sender@src.test>", args, 1, got_cb, g));
    STEP("rcpt", milter_rcpt(s, "<rcpt@dst.test>", NULL, 0, got_cb, g));
    STEP("data", milter_data(s, got_cb, g));
    const char *p = msg;
    while (*p != '\r') {
        const char *colon = strchr(p, ':'), *eol = strstr(p, "\r\n");
        char name[128], value[1024];
        snprintf(name, sizeof name, "%.*s", (int)(colon - p), p);
        const char *v = colon + 1 + (colon[1] == ' ');
        snprintf(value, sizeof value, "%.*s", (int)(eol - v), v);
        STEP("header", milter_header(s, name, value, got_cb, g));
        p = eol + 2;
    }
    p += 2;
    STEP("eoh", milter_eoh(s, got_cb, g));
    STEP("body", milter_body(s, p, strlen(p), got_cb, g));
    STEP("eom", milter_eom(s, "4ABC123", got_cb, g));
#undef STEP
}

/* run_message() that must reach end-of-message without a verdict that stops it. */
static void run_to_eom(struct event_base *base, struct milter_session *s, const char *msg, struct got *g, bool greet)
{
    const char *stage;
    run_message(base, s, msg, g, &stage, greet);
    assert_string_equal(stage, "eom");
}

/* The value of the first modification adding or changing header name, or NULL. */
static const char *mod_header(const struct milter_verdict *v, const char *name)
{
    for (size_t i = 0; i < v->nmods; i++)
        if ((v->mods[i].type == MM_ADDHEADER || v->mods[i].type == MM_INSHEADER ||
             v->mods[i].type == MM_CHGHEADER) && strcmp(v->mods[i].name, name) == 0)
            return v->mods[i].value;
    return NULL;
}

/* ---- spamass-milter ---- */

static void test_spamass_gtube(void **state)
{
    (void)state;
    char spec[64], msg[512];
    milter_peers_spamass(spec);
    struct event_base *base = event_base_new();
    struct milter_conf c = conf_for("spamass", spec, MILTER_TEMPFAIL);
    struct milter_session *s = milter_session_new(base, &c, 1, &info);
    snprintf(msg, sizeof msg,
             "From: <sender@src.test>\r\nTo: <rcpt@dst.test>\r\nSubject: buy now\r\nMessage-ID: <g1@src.test>\r\n\r\n"
             "Hello,\r\n%s\r\n",
             milter_peers_gtube);
    struct got g;
    run_to_eom(base, s, msg, &g, true);
    assert_int_equal(g.v.action, MV_REPLYCODE);
    assert_int_equal(g.v.code, 550);
    assert_string_equal(g.v.reply, "550 5.7.1 Blocked by SpamAssassin");
    assert_string_equal(g.v.milter, "spamass");
    assert_false(g.v.failed);
    milter_free(s);
    event_base_free(base);
}

static void test_spamass_clean(void **state)
{
    (void)state;
    char spec[64];
    milter_peers_spamass(spec);
    struct event_base *base = event_base_new();
    struct milter_conf c = conf_for("spamass", spec, MILTER_TEMPFAIL);
    struct milter_session *s = milter_session_new(base, &c, 1, &info);
    /* a current Date and a long Message-ID keep the score far from 5 (the test net client address
     * alone scores RCVD_ILLEGAL_IP) */
    char date[64], msg[512];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", gmtime(&now));
    snprintf(msg, sizeof msg,
             "From: <sender@src.test>\r\nTo: <rcpt@dst.test>\r\nSubject: lunch\r\n"
             "Message-ID: <20251124100000.4ABC123.lunch@src.test>\r\nDate: %s\r\n\r\n"
             "Shall we meet for lunch at noon tomorrow?\r\n",
             date);
    struct got g;
    run_to_eom(base, s, msg, &g, true);
    assert_int_equal(g.v.action, MV_ACCEPT);
    const char *status = mod_header(&g.v, "X-Spam-Status");
    assert_non_null(status);
    assert_memory_equal(status, "No, score=", 10);
    assert_non_null(mod_header(&g.v, "X-Spam-Checker-Version"));
    for (size_t i = 0; i < g.v.nmods; i++)
        assert_string_equal(g.v.mods[i].milter, "spamass");
    /* a second message in the same session, on the same connection */
    run_to_eom(base, s, msg, &g, false);
    assert_int_equal(g.v.action, MV_ACCEPT);
    assert_non_null(mod_header(&g.v, "X-Spam-Status"));
    assert_int_equal(milter_session_connected(s), 1);
    milter_free(s);
    event_base_free(base);
}

/* ---- clamav-milter ---- */

/* A message with a base64 attachment holding data. */
static void mime_message(char *out, size_t outlen, const char *data)
{
    unsigned char b64[256];
    EVP_EncodeBlock(b64, (const unsigned char *)data, (int)strlen(data));
    snprintf(out, outlen,
             "From: <sender@src.test>\r\nTo: <rcpt@dst.test>\r\nSubject: file\r\nMessage-ID: <v1@src.test>\r\n"
             "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUND\"\r\n\r\n"
             "--BOUND\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
             "--BOUND\r\nContent-Type: application/octet-stream; name=\"f.com\"\r\n"
             "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"f.com\"\r\n\r\n"
             "%s\r\n--BOUND--\r\n",
             b64);
}

static void clamav_case(const char *attachment, enum milter_verdict_action want, int code)
{
    char spec[64], msg[2048];
    milter_peers_clamav(spec);
    struct event_base *base = event_base_new();
    struct milter_conf c = conf_for("clamav", spec, MILTER_TEMPFAIL);
    struct milter_session *s = milter_session_new(base, &c, 1, &info);
    mime_message(msg, sizeof msg, attachment);
    struct got g;
    run_to_eom(base, s, msg, &g, true);
    if (g.v.action != want)
        fail_msg("action %d reply \"%s\"", g.v.action, g.v.reply);
    assert_int_equal(g.v.code, code);
    assert_false(g.v.failed);
    milter_free(s);
    event_base_free(base);
}

static void test_clamav_eicar(void **state)
{
    (void)state;
    clamav_case(milter_peers_eicar, MV_REJECT, 550);
}

static void test_clamav_clean(void **state)
{
    (void)state;
    clamav_case("just some harmless bytes", MV_ACCEPT, 0);
}

/* ---- the scripted milter ---- */

static const char plain_msg[] = "From: <sender@src.test>\r\nSubject: hi\r\n\r\nbody line\r\n";

static void peer_init(struct milter_peer *p, struct event_base *base)
{
    memset(p, 0, sizeof *p);
    p->actions = SMFI_CURR_ACTS;
    milter_peer_start(p, base);
}

/* A new loop, and p started on it. */
static struct event_base *loop_with_peer(struct milter_peer *p)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    peer_init(p, base);
    return base;
}

/* Frees the session, stops the milter, frees the loop. */
static void close_all(struct event_base *base, struct milter_session *s, struct milter_peer *p)
{
    milter_free(s);
    milter_peer_stop(p);
    event_base_free(base);
}

static void expect_seen(const struct milter_peer *p, const char *want)
{
    if (strcmp(buf_cstr(&p->seen), want) != 0)
        fail_msg("the milter saw:\n%s\nwant:\n%s", buf_cstr(&p->seen), want);
}

static void expect_verdict(const struct got *g, enum milter_verdict_action a, const char *reply)
{
    if (g->v.action != a || strcmp(g->v.reply, reply) != 0)
        fail_msg("verdict %d \"%s\", want %d \"%s\"", g->v.action, g->v.reply, a, reply);
}

/* Which failure a case provokes, before the session starts. */
enum fail_kind {
    F_SILENT,           /* never answers the negotiation */
    F_SILENT_RCPT,      /* answers everything but RCPT */
    F_UNKNOWN_REPLY,    /* answers the negotiation with an unknown command */
    F_ZERO_LENGTH,      /* ... with a packet of length 0 */
    F_OVERSIZED,        /* ... with a length over the bound */
    F_VERSION,          /* ... with protocol version 9 */
    F_HANGUP,           /* hangs up at the negotiation */
    F_MOD_AT_RCPT,      /* sends a header change in reply to RCPT */
    F_UNNEGOTIATED,     /* adds a recipient at EOM without SMFIF_ADDRCPT */
    F_BAD_REPLYCODE,    /* answers MAIL with the reply code text "250 ok" */
    F_DISCARD_CONNECT,  /* answers CONNECT with DISCARD */
    F_REFUSED,          /* nobody listens */
};

static void provoke(struct milter_peer *p, enum fail_kind k)
{
    static const char oversized[] = "\0\x10\0\x01" "c";
    switch (k) {
    case F_SILENT: p->mode = MILTER_PEER_SILENT; break;
    case F_SILENT_RCPT: p->reply['R'] = '.'; break;
    case F_UNKNOWN_REPLY: p->mode = MILTER_PEER_GARBAGE; milter_peer_pkt(&p->garbage, 'Z', "", 0); break;
    case F_ZERO_LENGTH: p->mode = MILTER_PEER_GARBAGE; buf_append(&p->garbage, "\0\0\0\0", 4); break;
    case F_OVERSIZED: p->mode = MILTER_PEER_GARBAGE; buf_append(&p->garbage, oversized, 5); break;
    case F_VERSION: p->version = 9; break;
    case F_HANGUP: p->mode = MILTER_PEER_HANGUP; break;
    case F_MOD_AT_RCPT: p->reply['R'] = 'h'; break;
    case F_UNNEGOTIATED:
        p->actions = SMFIF_ADDHDRS;
        milter_peer_pkt(&p->eom, SMFIR_ADDHEADER, "X-A\0v", 6);
        milter_peer_pkt(&p->eom, SMFIR_ADDRCPT, "<x@y>", 6);
        break;
    case F_BAD_REPLYCODE: p->reply['M'] = 'y'; p->reply_text['M'] = "250 ok"; break;
    case F_DISCARD_CONNECT: p->reply['C'] = 'd'; break;
    case F_REFUSED: break;
    }
}

static void test_failures_table(void **state)
{
    (void)state;
#define tempfail "451 4.7.1 Service unavailable - try again later"
#define reject "550 5.7.1 Service unavailable"
    static const struct {
        enum fail_kind kind;
        enum milter_default on_error;
        const char *stage;          /* where the verdict comes */
        enum milter_verdict_action action;
        const char *reply;
        long long min_ms;           /* the failing event took at least this long (the timeout) */
    } cases[] = {
        { F_SILENT, MILTER_TEMPFAIL, "connect", MV_TEMPFAIL, tempfail, 300 },
        { F_SILENT, MILTER_REJECT, "connect", MV_REJECT, reject, 300 },
        { F_SILENT, MILTER_ACCEPT, "eom", MV_ACCEPT, "", 300 },
        { F_SILENT_RCPT, MILTER_TEMPFAIL, "rcpt", MV_TEMPFAIL, tempfail, 300 },
        { F_UNKNOWN_REPLY, MILTER_TEMPFAIL, "connect", MV_TEMPFAIL, tempfail, 0 },
        { F_UNKNOWN_REPLY, MILTER_REJECT, "connect", MV_REJECT, reject, 0 },
        { F_UNKNOWN_REPLY, MILTER_ACCEPT, "eom", MV_ACCEPT, "", 0 },
        { F_ZERO_LENGTH, MILTER_TEMPFAIL, "connect", MV_TEMPFAIL, tempfail, 0 },
        { F_OVERSIZED, MILTER_REJECT, "connect", MV_REJECT, reject, 0 },
        { F_VERSION, MILTER_ACCEPT, "eom", MV_ACCEPT, "", 0 },
        { F_HANGUP, MILTER_TEMPFAIL, "connect", MV_TEMPFAIL, tempfail, 0 },
        { F_MOD_AT_RCPT, MILTER_TEMPFAIL, "rcpt", MV_TEMPFAIL, tempfail, 0 },
        { F_UNNEGOTIATED, MILTER_TEMPFAIL, "eom", MV_TEMPFAIL, tempfail, 0 },
        { F_UNNEGOTIATED, MILTER_ACCEPT, "eom", MV_ACCEPT, "", 0 },
        { F_BAD_REPLYCODE, MILTER_REJECT, "mail", MV_REJECT, reject, 0 },
        { F_DISCARD_CONNECT, MILTER_TEMPFAIL, "connect", MV_TEMPFAIL, tempfail, 0 },
        { F_REFUSED, MILTER_TEMPFAIL, "connect", MV_TEMPFAIL, tempfail, 0 },
        { F_REFUSED, MILTER_ACCEPT, "eom", MV_ACCEPT, "", 0 },
    };
#undef tempfail
#undef reject
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct milter_peer p;
        struct event_base *base = loop_with_peer(&p);
        provoke(&p, cases[i].kind);
        char spec[64];
        snprintf(spec, sizeof spec, "inet:%d@127.0.0.1", cases[i].kind == F_REFUSED ? tp_free_port() : p.port);
        int fds = milter_peers_fds();
        struct milter_conf c = { .name = "m1", .socket = spec, .connect_timeout = 1000, .command_timeout = 300,
                                 .content_timeout = 300, .on_error = cases[i].on_error };
        long long t0 = clock_mono_ms();
        struct milter_session *s = milter_session_new(base, &c, 1, &info);
        struct got g;
        const char *stage;
        run_message(base, s, plain_msg, &g, &stage, true);
        long long took = clock_mono_ms() - t0;
        if (strcmp(stage, cases[i].stage) != 0)
            fail_msg("case %zu: verdict at %s, want %s", i, stage, cases[i].stage);
        expect_verdict(&g, cases[i].action, cases[i].reply);
        assert_int_equal(g.v.failed, cases[i].on_error != MILTER_ACCEPT);
        assert_int_equal(g.v.nmods, 0);
        if (cases[i].on_error != MILTER_ACCEPT)
            assert_string_equal(g.v.milter, "m1");
        if (took < cases[i].min_ms || took >= (cases[i].min_ms > 0 ? 5 * cases[i].min_ms : 3000))
            fail_msg("case %zu: took %lld ms", i, took);
        /* the failed connection is closed at once; the peer sees it end */
        assert_int_equal(milter_session_connected(s), 0);
        if (cases[i].kind != F_REFUSED) {
            tp_run_until(base, peer_ended, &p, 2000);
            assert_true(p.eof);
        }
        tp_run_for(base, 20);
        if (milter_peers_fds() != fds)
            fail_msg("case %zu: %d fds open, %d before", i, milter_peers_fds(), fds);
        /* the verdict holds for the rest of the session */
        if (cases[i].on_error != MILTER_ACCEPT) {
            EV(base, g, milter_helo(s, "again.test", got_cb, &g));
            expect_verdict(&g, cases[i].action, cases[i].reply);
        }
        milter_free(s);
        tp_run_for(base, 10);
        assert_int_equal(milter_peers_fds(), fds);
        milter_peer_stop(&p);
        event_base_free(base);
    }
}

static void test_modifications(void **state)
{
    (void)state;
    struct milter_peer p;
    struct event_base *base = loop_with_peer(&p);
    struct buf *e = &p.eom;
    milter_peer_pkt(e, SMFIR_ADDHEADER, "X-Added\0one", 12);
    milter_peer_pkt(e, SMFIR_INSHEADER, "\0\0\0\0X-Top\0first", 16);
    milter_peer_pkt(e, SMFIR_CHGHEADER, "\0\0\0\x02Subject\0new subject", 24);
    milter_peer_pkt(e, SMFIR_CHGHEADER, "\0\0\0\x01X-Old\0", 11);
    milter_peer_pkt(e, SMFIR_CHGFROM, "<new@src.test>\0SIZE=100", 24);
    milter_peer_pkt(e, SMFIR_ADDRCPT, "<added@dst.test>", 17);
    milter_peer_pkt(e, SMFIR_ADDRCPT_PAR, "<added2@dst.test>\0NOTIFY=NEVER", 31);
    milter_peer_pkt(e, SMFIR_DELRCPT, "<rcpt@dst.test>", 16);
    milter_peer_pkt(e, SMFIR_REPLBODY, "new body line 1\r\n", 17);
    milter_peer_pkt(e, SMFIR_PROGRESS, "", 0);
    milter_peer_pkt(e, SMFIR_REPLBODY, "line 2\r\n", 8);
    milter_peer_pkt(e, SMFIR_QUARANTINE, "looks\x01odd", 10);
    struct milter_conf c = conf_for("m1", p.spec, MILTER_TEMPFAIL);
    struct milter_session *s = milter_session_new(base, &c, 1, &info);
    struct got g;
    run_to_eom(base, s, plain_msg, &g, true);
    assert_int_equal(g.v.action, MV_QUARANTINE);
    assert_string_equal(g.v.quarantine, "looks\\x01odd");
    assert_string_equal(g.v.milter, "m1");
    static const struct {
        enum milter_mod_type type;
        uint32_t index;
        const char *name, *value;
    } want[] = {
        { MM_ADDHEADER, 0, "X-Added", "one" },
        { MM_INSHEADER, 0, "X-Top", "first" },
        { MM_CHGHEADER, 2, "Subject", "new subject" },
        { MM_CHGHEADER, 1, "X-Old", "" },
        { MM_CHGFROM, 0, "<new@src.test>", "SIZE=100" },
        { MM_ADDRCPT, 0, "<added@dst.test>", NULL },
        { MM_ADDRCPT_PAR, 0, "<added2@dst.test>", "NOTIFY=NEVER" },
        { MM_DELRCPT, 0, "<rcpt@dst.test>", NULL },
        { MM_REPLBODY, 0, NULL, NULL },
        { MM_QUARANTINE, 0, NULL, "looks\\x01odd" },
    };
    assert_int_equal(g.v.nmods, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < g.v.nmods; i++) {
        const struct milter_mod *m = &g.v.mods[i];
        assert_int_equal(m->type, want[i].type);
        assert_int_equal(m->index, want[i].index);
        assert_string_equal(m->milter, "m1");
        if (want[i].name == NULL)
            assert_null(m->name);
        else
            assert_string_equal(m->name, want[i].name);
        if (want[i].value == NULL)
            assert_null(m->value);
        else
            assert_string_equal(m->value, want[i].value);
    }
    assert_string_equal(buf_cstr(&g.v.mods[8].body), "new body line 1\r\nline 2\r\n");
    close_all(base, s, &p);
}

/* Progress packets extend the content timeout; without them the same delay is a timeout. */
static void test_progress(void **state)
{
    (void)state;
    for (int with = 1; with >= 0; with--) {
        struct milter_peer p;
        struct event_base *base = loop_with_peer(&p);
        p.reply['E'] = 'a';
        if (with) {
            p.progress_n = 6;
            p.progress_ms = 250;
        } else {
            p.eom_delay_ms = 1500;
        }
        struct milter_conf c = conf_for("m1", p.spec, MILTER_TEMPFAIL);
        c.content_timeout = 400;
        long long t0 = clock_mono_ms();
        struct milter_session *s = milter_session_new(base, &c, 1, &info);
        struct got g;
        const char *stage;
        run_message(base, s, plain_msg, &g, &stage, true);
        long long took = clock_mono_ms() - t0;
        assert_string_equal(stage, "eom");
        if (with) {
            expect_verdict(&g, MV_ACCEPT, "");
            assert_false(g.v.failed);
            if (took < 1500)
                fail_msg("took %lld ms", took);
        } else {
            expect_verdict(&g, MV_TEMPFAIL, "451 4.7.1 Service unavailable - try again later");
            assert_true(g.v.failed);
            if (took < 400 || took >= 1500)
                fail_msg("took %lld ms", took);
        }
        close_all(base, s, &p);
    }
}

/* One milter's decision at each stage, and what the next event gets. */
static void test_decisions_table(void **state)
{
    (void)state;
    enum next { SAME_MAIL, SAME_EOM, RCPT_GOES_ON, MAIL_GOES_ON };
    static const struct {
        char cmd, reply;
        const char *text;
        const char *stage;
        enum milter_verdict_action action;
        const char *want;
        enum next next;
    } cases[] = {
        { 'C', 't', NULL, "connect", MV_TEMPFAIL, "451 4.7.1 Service unavailable - try again later", SAME_MAIL },
        { 'H', 'y', "554 5.7.1 go away", "helo", MV_REPLYCODE, "554 5.7.1 go away", SAME_MAIL },
        { 'M', 'r', NULL, "mail", MV_REJECT, "550 5.7.1 Command rejected", SAME_EOM },
        { 'R', 't', NULL, "rcpt", MV_TEMPFAIL, "451 4.7.1 Service unavailable - try again later", RCPT_GOES_ON },
        { 'T', 'y', "451 4.3.0 try later", "data", MV_REPLYCODE, "451 4.3.0 try later", SAME_EOM },
        { 'L', 'y', "554 5.7.0 bad header", "header", MV_REPLYCODE, "554 5.7.0 bad header", SAME_EOM },
        { 'N', 'd', NULL, "eoh", MV_DISCARD, "", SAME_EOM },
        { 'B', 'f', NULL, "body", MV_SHUTDOWN, "421 4.7.0 Server closing connection", SAME_MAIL },
        { 'E', 'd', NULL, "eom", MV_DISCARD, "", MAIL_GOES_ON },
        { 'E', 'r', NULL, "eom", MV_REJECT, "550 5.7.1 Command rejected", MAIL_GOES_ON },
        { 'N', 'a', NULL, "eom", MV_ACCEPT, "", MAIL_GOES_ON },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct milter_peer p;
        struct event_base *base = loop_with_peer(&p);
        p.reply[(int)cases[i].cmd] = cases[i].reply;
        p.reply_text[(int)cases[i].cmd] = cases[i].text;
        struct milter_conf c = conf_for("m1", p.spec, MILTER_TEMPFAIL);
        struct milter_session *s = milter_session_new(base, &c, 1, &info);
        struct got g;
        const char *stage;
        run_message(base, s, plain_msg, &g, &stage, true);
        if (strcmp(stage, cases[i].stage) != 0)
            fail_msg("case %zu: verdict at %s", i, stage);
        expect_verdict(&g, cases[i].action, cases[i].want);
        assert_false(g.v.failed);
        assert_string_equal(g.v.milter != NULL ? g.v.milter : "", cases[i].action == MV_ACCEPT ? "" : "m1");
        struct milter_verdict first = g.v;
        switch (cases[i].next) {
        case SAME_MAIL:
            EV(base, g, milter_mail(s, "<x@src.test>", NULL, 0, got_cb, &g));
            expect_verdict(&g, first.action, first.reply);
            break;
        case SAME_EOM:
            EV(base, g, milter_eom(s, NULL, got_cb, &g));
            expect_verdict(&g, first.action, first.reply);
            milter_abort(s);
            p.reply[(int)cases[i].cmd] = 0;
            EV(base, g, milter_mail(s, "<x@src.test>", NULL, 0, got_cb, &g));
            expect_verdict(&g, MV_CONTINUE, "");
            break;
        case RCPT_GOES_ON:
            p.reply[(int)cases[i].cmd] = 0;
            EV(base, g, milter_rcpt(s, "<y@dst.test>", NULL, 0, got_cb, &g));
            expect_verdict(&g, MV_CONTINUE, "");
            break;
        case MAIL_GOES_ON:
            EV(base, g, milter_mail(s, "<x@src.test>", NULL, 0, got_cb, &g));
            expect_verdict(&g, MV_CONTINUE, "");
            break;
        }
        close_all(base, s, &p);
    }
}

/* Protocol flags and macro lists: the milter's whole transcript. */
static void test_flags_and_macros(void **state)
{
    (void)state;
    struct milter_peer p;
    struct event_base *base = loop_with_peer(&p);
    p.actions = SMFIF_SETSYMLIST;
    p.proto = SMFIP_NOHELO | SMFIP_NOHDRS | SMFIP_NR_RCPT | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_RCPT_REJ;
    buf_append(&p.optneg_extra, "\0\0\0\0j {client_addr} _ {nothing}", 32);
    buf_append(&p.optneg_extra, "\0\0\0\x03{rcpt_addr} i", 18);
    struct milter_conf c = conf_for("m1", p.spec, MILTER_TEMPFAIL);
    struct milter_session *s = milter_session_new(base, &c, 1, &info);
    milter_macro_set(s, "{auth_authen}", "bob");
    struct got g;
    const char *msg = "From: <sender@src.test>\r\nSubject: hi\r\n\r\nbody\r\n";
    run_to_eom(base, s, msg, &g, true);
    expect_verdict(&g, MV_ACCEPT, "");
    EV(base, g, milter_unknown(s, "XFOO bar", got_cb, &g));
    expect_verdict(&g, MV_CONTINUE, "");
    milter_free(s);
    tp_run_for(base, 20);
    expect_seen(&p, "O v=6 a=1ff p=ff7ff\n"
                    "D C j=mx.test {client_addr}=192.0.2.10 _=client.test [192.0.2.10]\n"
                    "C client.test 4 40000 192.0.2.10\n"
                    "D H s=client.test\n"
                    "D M {auth_authen}=bob {mail_addr}=sender@src.test {mail_host}=src.test\n"
                    "M <sender@src.test>|BODY=8BITMIME\n"
                    "D R {rcpt_addr}=rcpt@dst.test\n"
                    "R <rcpt@dst.test>\n"
                    "T\n"
                    "N\n"
                    "B 6\n"
                    "D E i=4ABC123\n"
                    "E\n"
                    "U XFOO bar\n"
                    "Q\n");
    assert_true(p.eof);
    milter_peer_stop(&p);
    event_base_free(base);
}

/* Default macros, an IPv6 client without a name, NR_HDR and a body over one chunk. */
static void test_defaults_and_chunks(void **state)
{
    (void)state;
    struct milter_peer p;
    struct event_base *base = loop_with_peer(&p);
    p.proto = SMFIP_NR_HDR;
    struct milter_conf c = conf_for("m1", p.spec, MILTER_TEMPFAIL);
    struct milter_session *s = milter_session_new(base, &c, 1, &info);
    struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(2525) };
    inet_pton(AF_INET6, "2001:db8::7", &a6.sin6_addr);
    struct got g;
    EV(base, g, milter_connect(s, NULL, (struct sockaddr *)&a6, got_cb, &g));
    expect_verdict(&g, MV_CONTINUE, "");
    EV(base, g, milter_mail(s, "<>", NULL, 0, got_cb, &g));
    EV(base, g, milter_rcpt(s, "<r@dst.test>", NULL, 0, got_cb, &g));
    EV(base, g, milter_data(s, got_cb, &g));
    EV(base, g, milter_header(s, "Subject", "one", got_cb, &g));
    EV(base, g, milter_header(s, "X-Two", "two", got_cb, &g));
    EV(base, g, milter_eoh(s, got_cb, &g));
    static char big[100000];
    memset(big, 'x', sizeof big);
    EV(base, g, milter_body(s, big, sizeof big, got_cb, &g));
    expect_verdict(&g, MV_CONTINUE, "");
    EV(base, g, milter_eom(s, NULL, got_cb, &g));
    expect_verdict(&g, MV_ACCEPT, "");
    tp_run_for(base, 20);
    expect_seen(&p, "O v=6 a=1ff p=ff7ff\n"
                    "D C j=mx.test {daemon_name}=mx {daemon_addr}=127.0.0.1 {daemon_port}=25 v=mxgate "
                    "_=unknown [2001:db8::7] {client_addr}=2001:db8::7 {client_name}=unknown {client_port}=2525\n"
                    "C [2001:db8::7] 6 2525 2001:db8::7\n"
                    "D M {mail_addr}=\n"
                    "M <>\n"
                    "D R {rcpt_addr}=r@dst.test {rcpt_host}=dst.test\n"
                    "R <r@dst.test>\n"
                    "T\n"
                    "L Subject|one\n"
                    "L X-Two|two\n"
                    "N\n"
                    "B 65535\n"
                    "B 34465\n"
                    "E\n");
    close_all(base, s, &p);
}

/* Two milters: who sees what after ACCEPT, REJECT, reply codes, DISCARD, SKIP and SHUTDOWN. */
static void test_chain(void **state)
{
    (void)state;
    struct milter_peer a, b;
    struct event_base *base = loop_with_peer(&a);
    peer_init(&b, base);
    struct milter_conf c[2] = { conf_for("a", a.spec, MILTER_TEMPFAIL), conf_for("b", b.spec, MILTER_TEMPFAIL) };
    struct milter_session *s = milter_session_new(base, c, 2, &info);
    struct sockaddr_in ca = client_addr();
    struct got g;
    EV(base, g, milter_connect(s, "client.test", (struct sockaddr *)&ca, got_cb, &g));
    expect_verdict(&g, MV_CONTINUE, "");

    /* a accepts the message at MAIL: b goes on alone, a gets ABORT when the message ends */
    a.reply['M'] = 'a';
    EV(base, g, milter_mail(s, "<s@src.test>", NULL, 0, got_cb, &g));
    expect_verdict(&g, MV_CONTINUE, "");
    EV(base, g, milter_rcpt(s, "<r@dst.test>", NULL, 0, got_cb, &g));
    EV(base, g, milter_data(s, got_cb, &g));
    EV(base, g, milter_eom(s, "Q1", got_cb, &g));
    expect_verdict(&g, MV_ACCEPT, "");
    tp_run_for(base, 20);
    assert_non_null(strstr(buf_cstr(&a.seen), "M <s@src.test>\nA\n"));
    assert_null(strstr(buf_cstr(&a.seen), "R <r@dst.test>"));
    assert_non_null(strstr(buf_cstr(&b.seen), "M <s@src.test>\nD R {rcpt_addr}=r@dst.test {rcpt_host}=dst.test\n"
                                              "R <r@dst.test>\nT\nD E i=Q1\nE\n"));
    buf_reset(&a.seen);
    buf_reset(&b.seen);

    /* a refuses one recipient with its own reply: b never sees it; the next one passes */
    a.reply['M'] = 0;
    a.reply['R'] = 'y';
    a.reply_text['R'] = "550 5.1.1 <bad@dst.test>: no such user";
    EV(base, g, milter_mail(s, "<s@src.test>", NULL, 0, got_cb, &g));
    EV(base, g, milter_rcpt(s, "<bad@dst.test>", NULL, 0, got_cb, &g));
    expect_verdict(&g, MV_REPLYCODE, "550 5.1.1 <bad@dst.test>: no such user");
    assert_int_equal(g.v.code, 550);
    assert_string_equal(g.v.milter, "a");
    a.reply['R'] = 0;
    EV(base, g, milter_rcpt(s, "<good@dst.test>", NULL, 0, got_cb, &g));
    expect_verdict(&g, MV_CONTINUE, "");
    /* b discards at DATA: the rest of the message is discarded without asking anyone */
    b.reply['T'] = 'd';
    EV(base, g, milter_data(s, got_cb, &g));
    expect_verdict(&g, MV_DISCARD, "");
    assert_string_equal(g.v.milter, "b");
    EV(base, g, milter_header(s, "Subject", "x", got_cb, &g));
    expect_verdict(&g, MV_DISCARD, "");
    EV(base, g, milter_eom(s, NULL, got_cb, &g));
    expect_verdict(&g, MV_DISCARD, "");
    tp_run_for(base, 20);
    assert_null(strstr(buf_cstr(&b.seen), "bad@dst.test"));
    assert_non_null(strstr(buf_cstr(&a.seen), "R <good@dst.test>\nT\nA\n"));
    assert_non_null(strstr(buf_cstr(&b.seen), "R <good@dst.test>\nT\nA\n"));
    assert_null(strstr(buf_cstr(&a.seen), "L Subject"));
    buf_reset(&a.seen);
    buf_reset(&b.seen);
    b.reply['T'] = 0;

    /* a skips the rest of the body after the first chunk */
    a.reply['B'] = 's';
    static char big[100000];
    memset(big, 'y', sizeof big);
    EV(base, g, milter_mail(s, "<s@src.test>", NULL, 0, got_cb, &g));
    EV(base, g, milter_rcpt(s, "<r@dst.test>", NULL, 0, got_cb, &g));
    EV(base, g, milter_data(s, got_cb, &g));
    EV(base, g, milter_body(s, big, sizeof big, got_cb, &g));
    expect_verdict(&g, MV_CONTINUE, "");
    EV(base, g, milter_body(s, "more\r\n", 6, got_cb, &g));
    EV(base, g, milter_eom(s, NULL, got_cb, &g));
    expect_verdict(&g, MV_ACCEPT, "");
    tp_run_for(base, 20);
    assert_non_null(strstr(buf_cstr(&a.seen), "T\nB 65535\nE\n"));
    assert_non_null(strstr(buf_cstr(&b.seen), "T\nB 65535\nB 34465\nB 6\nE\n"));
    a.reply['B'] = 0;

    /* b shuts the session down: 421 from then on */
    b.reply['M'] = '4';
    EV(base, g, milter_mail(s, "<s@src.test>", NULL, 0, got_cb, &g));
    expect_verdict(&g, MV_SHUTDOWN, "421 4.7.0 Server closing connection");
    EV(base, g, milter_rcpt(s, "<r@dst.test>", NULL, 0, got_cb, &g));
    expect_verdict(&g, MV_SHUTDOWN, "421 4.7.0 Server closing connection");
    assert_int_equal(milter_session_connected(s), 1);
    milter_free(s);
    tp_run_for(base, 20);
    assert_true(a.eof && b.eof);
    milter_peer_stop(&a);
    milter_peer_stop(&b);
    event_base_free(base);
}

/* REJECT and ACCEPT at CONNECT hold for the whole session; done may free the session. */
static void test_connect_decisions(void **state)
{
    (void)state;
    struct milter_peer a, b;
    struct event_base *base = loop_with_peer(&a);
    peer_init(&b, base);
    struct milter_conf c[2] = { conf_for("a", a.spec, MILTER_TEMPFAIL), conf_for("b", b.spec, MILTER_TEMPFAIL) };
    struct sockaddr_in ca = client_addr();
    struct got g;

    a.reply['C'] = 'r';
    struct milter_session *s = milter_session_new(base, c, 2, &info);
    EV(base, g, milter_connect(s, "client.test", (struct sockaddr *)&ca, got_cb, &g));
    expect_verdict(&g, MV_REJECT, "550 5.7.1 Command rejected");
    assert_false(g.v.failed);
    EV(base, g, milter_helo(s, "client.test", got_cb, &g));
    expect_verdict(&g, MV_REJECT, "550 5.7.1 Command rejected");
    tp_run_for(base, 20);
    assert_true(a.eof);
    assert_null(strstr(buf_cstr(&b.seen), "\nC "));
    assert_int_equal(milter_session_connected(s), 1);
    milter_free(s);

    /* a accepts at CONNECT: done with a for the session, b sees everything */
    a.reply['C'] = 'a';
    buf_reset(&a.seen);
    buf_reset(&b.seen);
    s = milter_session_new(base, c, 2, &info);
    run_to_eom(base, s, plain_msg, &g, true);
    expect_verdict(&g, MV_ACCEPT, "");
    tp_run_for(base, 20);
    assert_null(strstr(buf_cstr(&a.seen), "\nH "));
    assert_non_null(strstr(buf_cstr(&b.seen), "\nE\n"));
    assert_int_equal(milter_session_connected(s), 1);

    /* milter_free() from inside done */
    memset(&g, 0, sizeof g);
    g.free_in_done = true;
    milter_mail(s, "<s@src.test>", NULL, 0, got_cb, &g);
    assert_int_equal(wait_done(base, &g, 5000), 1);
    tp_run_for(base, 20);
    assert_true(b.eof);
    milter_peer_stop(&a);
    milter_peer_stop(&b);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest spam[] = {
        cmocka_unit_test(test_spamass_gtube),
        cmocka_unit_test(test_spamass_clean),
    };
    const struct CMUnitTest scripted[] = {
        cmocka_unit_test(test_failures_table),
        cmocka_unit_test(test_modifications),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_decisions_table),
        cmocka_unit_test(test_flags_and_macros),
        cmocka_unit_test(test_defaults_and_chunks),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_connect_decisions),
    };
    const struct CMUnitTest clam[] = {
        cmocka_unit_test(test_clamav_eicar),
        cmocka_unit_test(test_clamav_clean),
    };
    int failed = cmocka_run_group_tests_name("scripted", scripted, milter_peers_setup, milter_peers_teardown);
    failed += cmocka_run_group_tests_name("spamass-milter", spam, milter_peers_setup, milter_peers_teardown);
    failed += cmocka_run_group_tests_name("clamav-milter", clam, milter_peers_setup, milter_peers_teardown);
    return failed;
}
