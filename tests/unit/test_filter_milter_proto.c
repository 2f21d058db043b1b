/*
 * test_filter_milter_proto.c - the milter codec (filters/filter_milter_proto.c) by table: every MTA
 * command encoded byte for byte; every reply decoded, malformed ones included (zero, short and
 * oversized lengths, missing NULs, trailing bytes, bad reply code texts, forbidden bytes, unknown
 * commands) with the exact error; the option negotiation checks; reply code normalisation;
 * modifications and the bound on a replaced body; endpoints; macro names and per-stage macro packets.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "buf.h"
#include "filter_milter.h"

/* Shows bytes as C escapes, for failure messages. */
static const char *show(const void *p, size_t n)
{
    static char out[4][2048];
    static int k;
    char *o = out[k++ & 3];
    size_t w = 0;
    for (size_t i = 0; i < n && w < 2000; i++) {
        unsigned char c = ((const unsigned char *)p)[i];
        w += (size_t)snprintf(o + w, 2048 - w, c >= 0x20 && c < 0x7f && c != '\\' ? "%c" : "\\x%02x", c);
    }
    o[w] = '\0';
    return o;
}

static struct sockaddr_in sin4(const char *ip, int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct sockaddr_in6 sin6(const char *ip, int port)
{
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

/* ---- encoding ---- */

static void enc_optneg(struct buf *b) { milter_enc_optneg(b, MILTER_MY_VERSION, MILTER_MY_ACTIONS, MILTER_MY_PROTO); }
static void enc_macros(struct buf *b)
{
    const char *n[] = { "j", "{daemon_name}" }, *v[] = { "mx.test", "mx" };
    milter_enc_macros(b, SMFIC_CONNECT, n, v, 2);
}
static void enc_conn4(struct buf *b)
{
    struct sockaddr_in a = sin4("192.0.2.1", 4567);
    milter_enc_connect(b, "client.test", (struct sockaddr *)&a);
}
static void enc_conn6(struct buf *b)
{
    struct sockaddr_in6 a = sin6("2001:db8::1", 25);
    milter_enc_connect(b, "[2001:db8::1]", (struct sockaddr *)&a);
}
static void enc_conn_mapped(struct buf *b)
{
    struct sockaddr_in6 a = sin6("::ffff:192.0.2.7", 1);
    milter_enc_connect(b, "h", (struct sockaddr *)&a);
}
static void enc_conn_unix(struct buf *b)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = "/tmp/s" };
    milter_enc_connect(b, "localhost", (struct sockaddr *)&a);
}
static void enc_conn_unknown(struct buf *b) { milter_enc_connect(b, "unknown", NULL); }
static void enc_helo(struct buf *b) { milter_enc_helo(b, "mail.test"); }
static void enc_mail(struct buf *b)
{
    const char *args[] = { "SIZE=10", "BODY=8BITMIME" };
    milter_enc_envelope(b, SMFIC_MAIL, "<a@b.test>", args, 2);
}
static void enc_rcpt(struct buf *b) { milter_enc_envelope(b, SMFIC_RCPT, "<c@d.test>", NULL, 0); }
static void enc_header(struct buf *b) { milter_enc_header(b, "Subject", "hi there"); }
static void enc_body(struct buf *b) { milter_enc_body(b, SMFIC_BODY, "a\0c\r\n", 5); }
static void enc_eob(struct buf *b) { milter_enc_body(b, SMFIC_BODYEOB, "", 0); }
static void enc_unknown(struct buf *b) { milter_enc_unknown(b, "XFOO bar"); }
static void enc_abort(struct buf *b) { milter_enc_cmd(b, SMFIC_ABORT); }
static void enc_data(struct buf *b) { milter_enc_cmd(b, SMFIC_DATA); }
static void enc_eoh(struct buf *b) { milter_enc_cmd(b, SMFIC_EOH); }
static void enc_quit(struct buf *b) { milter_enc_cmd(b, SMFIC_QUIT); }
static void enc_quit_nc(struct buf *b) { milter_enc_cmd(b, SMFIC_QUIT_NC); }
static void enc_stage(struct buf *b)
{
    struct milter_macros mm = { 0 };
    milter_macros_set(&mm, "i", "Q1");
    milter_macros_set(&mm, "rcpt_addr", "x@y");
    milter_macros_set(&mm, "{mail_addr}", "a@b");
    milter_macros_set(&mm, "{i}", "Q2");        /* the same macro as "i" */
    milter_enc_stage_macros(b, SMFIC_RCPT, "{rcpt_addr} i  {bogus},mail_addr", &mm);
    milter_macros_release(&mm);
}
static void enc_stage_none(struct buf *b)
{
    struct milter_macros mm = { 0 };
    milter_macros_set(&mm, "j", "mx");
    milter_enc_stage_macros(b, SMFIC_EOH, "i {x}", &mm);
    milter_enc_stage_macros(b, SMFIC_EOH, "", &mm);
    milter_macros_release(&mm);
}

#define W(s) s, sizeof s - 1

static void test_encode_table(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        void (*enc)(struct buf *);
        const char *want;
        size_t wantlen;
    } cases[] = {
        { "optneg", enc_optneg, W("\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x0f\xf7\xff") },
        { "macros", enc_macros, W("\0\0\0\x1d" "DCj\0mx.test\0{daemon_name}\0mx\0") },
        { "connect v4", enc_conn4, W("\0\0\0\x1a" "Cclient.test\0" "4\x11\xd7" "192.0.2.1\0") },
        { "connect v6", enc_conn6, W("\0\0\0\x1e" "C[2001:db8::1]\0" "6\0\x19" "2001:db8::1\0") },
        { "connect mapped", enc_conn_mapped, W("\0\0\0\x10" "Ch\0" "4\0\x01" "192.0.2.7\0") },
        { "connect unix", enc_conn_unix, W("\0\0\0\x15" "Clocalhost\0" "L\0\0" "/tmp/s\0") },
        { "connect unknown", enc_conn_unknown, W("\0\0\0\x0a" "Cunknown\0U") },
        { "helo", enc_helo, W("\0\0\0\x0bHmail.test\0") },
        { "mail", enc_mail, W("\0\0\0\x22M<a@b.test>\0SIZE=10\0BODY=8BITMIME\0") },
        { "rcpt", enc_rcpt, W("\0\0\0\x0cR<c@d.test>\0") },
        { "header", enc_header, W("\0\0\0\x12LSubject\0hi there\0") },
        { "body", enc_body, W("\0\0\0\x06" "Ba\0c\r\n") },
        { "eob", enc_eob, W("\0\0\0\x01" "E") },
        { "unknown", enc_unknown, W("\0\0\0\x0aUXFOO bar\0") },
        { "abort", enc_abort, W("\0\0\0\x01" "A") },
        { "data", enc_data, W("\0\0\0\x01T") },
        { "eoh", enc_eoh, W("\0\0\0\x01N") },
        { "quit", enc_quit, W("\0\0\0\x01Q") },
        { "quit_nc", enc_quit_nc, W("\0\0\0\x01K") },
        { "stage macros", enc_stage, W("\0\0\0\x27" "DR{rcpt_addr}\0x@y\0i\0Q2\0{mail_addr}\0a@b\0") },
        { "stage macros, none set", enc_stage_none, W("") },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b = BUF_INIT;
        cases[i].enc(&b);
        if (b.len != cases[i].wantlen || memcmp(buf_cstr(&b), cases[i].want, b.len) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].name, show(b.data, b.len),
                     show(cases[i].want, cases[i].wantlen));
        buf_release(&b);
    }
}

/* ---- decoding ---- */

struct dcase {
    const char *in;             /* the whole packet, length field included */
    size_t inlen;
    enum milter_perr want;      /* of milter_frame(), then of milter_decode() */
    char cmd;
    uint32_t index;
    const char *name, *value;   /* NULL: must be NULL */
    size_t bodylen;
    int code;
    const char *reply;
};

#define P(s) s, sizeof s - 1

static const struct dcase dcases[] = {
    /* the decisions carry no data */
    { P("\0\0\0\x01" "a"), MILTER_P_OK, .cmd = 'a' },
    { P("\0\0\0\x01" "c"), MILTER_P_OK, .cmd = 'c' },
    { P("\0\0\0\x01" "d"), MILTER_P_OK, .cmd = 'd' },
    { P("\0\0\0\x01" "r"), MILTER_P_OK, .cmd = 'r' },
    { P("\0\0\0\x01" "t"), MILTER_P_OK, .cmd = 't' },
    { P("\0\0\0\x01" "s"), MILTER_P_OK, .cmd = 's' },
    { P("\0\0\0\x01" "p"), MILTER_P_OK, .cmd = 'p' },
    { P("\0\0\0\x01" "f"), MILTER_P_OK, .cmd = 'f' },
    { P("\0\0\0\x01" "4"), MILTER_P_OK, .cmd = '4' },
    { P("\0\0\0\x02" "cX"), MILTER_P_TRAILING, .cmd = 'c' },
    { P("\0\0\0\x02" "p\0"), MILTER_P_TRAILING, .cmd = 'p' },
    /* framing */
    { P("\0\0\0\x00" "c"), .want = MILTER_P_ZERO },
    { P("\0\x10\0\x01"), .want = MILTER_P_TOOBIG },             /* MILTER_PACKET_MAX + 1 */
    { P("\xff\xff\xff\xff"), .want = MILTER_P_TOOBIG },
    { P("\0\0\0\x05" "h"), .want = MILTER_P_MORE },
    { P("\0\0"), .want = MILTER_P_MORE },
    /* unknown commands */
    { P("\0\0\0\x01" "Z"), MILTER_P_UNKNOWN, .cmd = 'Z' },
    { P("\0\0\0\x01" "l"), MILTER_P_UNKNOWN, .cmd = 'l' },
    { P("\0\0\0\x01" "\0"), MILTER_P_UNKNOWN, .cmd = '\0' },
    /* reply codes */
    { P("\0\0\0\x13" "y550 5.7.1 Blocked\0"), MILTER_P_OK, .cmd = 'y', .code = 550, .reply = "550 5.7.1 Blocked" },
    { P("\0\0\0\x11" "y451 4.7.0 later\0"), MILTER_P_OK, .cmd = 'y', .code = 451, .reply = "451 4.7.0 later" },
    { P("\0\0\0\x0d" "y550 Blocked\0"), MILTER_P_OK, .cmd = 'y', .code = 550, .reply = "550 5.7.1 Blocked" },
    { P("\0\0\0\x0b" "y421 4.3.2\0"), MILTER_P_OK, .cmd = 'y', .code = 421, .reply = "421 4.3.2" },
    { P("\0\0\0\x23" "y550-5.7.1 first\r\n550 5.7.1 second\0"), MILTER_P_OK, .cmd = 'y', .code = 550,
      .reply = "550 5.7.1 first second" },
    { P("\0\0\0\x17" "y550 5.7.1 100%% sure%\0"), MILTER_P_OK, .cmd = 'y', .code = 550, .reply = "550 5.7.1 100% sure" },
    { P("\0\0\0\x14" "y550 5.7.1 bad\x01\xc3\xa9te\0"), MILTER_P_OK, .cmd = 'y', .code = 550,
      .reply = "550 5.7.1 bad???te" },
    { P("\0\0\0\x12" "y550 5 minutes ok\0"), MILTER_P_OK, .cmd = 'y', .code = 550, .reply = "550 5.7.1 5 minutes ok" },
    { P("\0\0\0\x08" "y250 ok\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x06" "y55 x\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x05" "y550\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x0b" "y5x0 5.7.1\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x0d" "y550_5.7.1 x\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x11" "y550 4.7.1 class\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x10" "y550-5.7.1 only\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x1a" "y550-5.7.1 a\r\n551 5.7.1 b\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x1a" "y550 5.7.1 a\r\n550 5.7.1 b\0"), MILTER_P_REPLYCODE, .cmd = 'y' },
    { P("\0\0\0\x0c" "y550 5.7.1 x"), MILTER_P_NONUL, .cmd = 'y' },
    { P("\0\0\0\x0e" "y550 5.7.1 x\0z"), MILTER_P_TRAILING, .cmd = 'y' },
    { P("\0\0\0\x01" "y"), MILTER_P_NONUL, .cmd = 'y' },
    /* header changes */
    { P("\0\0\0\x0c" "hX-Spam\0yes\0"), MILTER_P_OK, .cmd = 'h', .name = "X-Spam", .value = "yes" },
    { P("\0\0\0\x0d" "hX-Spam\0a\n\tb\0"), MILTER_P_OK, .cmd = 'h', .name = "X-Spam", .value = "a\n\tb" },
    { P("\0\0\0\x0e" "hX-Spam\0a\r\n b\0"), MILTER_P_OK, .cmd = 'h', .name = "X-Spam", .value = "a\r\n b" },
    { P("\0\0\0\x04" "hX\0\0"), MILTER_P_OK, .cmd = 'h', .name = "X", .value = "" },
    { P("\0\0\0\x0b" "hX-Spam\0yes"), MILTER_P_NONUL, .cmd = 'h' },
    { P("\0\0\0\x07" "hX-Spam"), MILTER_P_NONUL, .cmd = 'h' },
    { P("\0\0\0\x01" "h"), MILTER_P_NONUL, .cmd = 'h' },
    { P("\0\0\0\x06" "hX\0v\0z"), MILTER_P_TRAILING, .cmd = 'h' },
    { P("\0\0\0\x06" "hX Y\0\0"), MILTER_P_TEXT, .cmd = 'h' },
    { P("\0\0\0\x06" "hX:Y\0\0"), MILTER_P_TEXT, .cmd = 'h' },
    { P("\0\0\0\x04" "h\0v\0"), MILTER_P_TEXT, .cmd = 'h' },
    { P("\0\0\0\x07" "hX\0a\nb\0"), MILTER_P_TEXT, .cmd = 'h' },
    { P("\0\0\0\x07" "hX\0a\rb\0"), MILTER_P_TEXT, .cmd = 'h' },
    { P("\0\0\0\x07" "hX\0ab\n\0"), MILTER_P_TEXT, .cmd = 'h' },
    { P("\0\0\0\x0b" "i\0\0\0\0X-A\0v\0"), MILTER_P_OK, .cmd = 'i', .index = 0, .name = "X-A", .value = "v" },
    { P("\0\0\0\x0b" "i\0\0\0\x03X-A\0v\0"), MILTER_P_OK, .cmd = 'i', .index = 3, .name = "X-A", .value = "v" },
    { P("\0\0\0\x04" "i\0\0\0"), MILTER_P_SHORT, .cmd = 'i' },
    { P("\0\0\0\x05" "i\0\0\0\0"), MILTER_P_NONUL, .cmd = 'i' },
    { P("\0\0\0\x0b" "m\0\0\0\0X-A\0v\0"), MILTER_P_OK, .cmd = 'm', .index = 1, .name = "X-A", .value = "v" },
    { P("\0\0\0\x0e" "m\0\0\0\x02Subject\0\0"), MILTER_P_OK, .cmd = 'm', .index = 2, .name = "Subject", .value = "" },
    { P("\0\0\0\x08" "m\0\0\0\x01\0v\0"), MILTER_P_TEXT, .cmd = 'm' },
    { P("\0\0\0\x02" "m\0"), MILTER_P_SHORT, .cmd = 'm' },
    /* envelope changes */
    { P("\0\0\0\x09" "e<new@x>\0"), MILTER_P_OK, .cmd = 'e', .name = "<new@x>" },
    { P("\0\0\0\x10" "e<new@x>\0SIZE=1\0"), MILTER_P_OK, .cmd = 'e', .name = "<new@x>", .value = "SIZE=1" },
    { P("\0\0\0\x0a" "e<new@x>\0\0"), MILTER_P_OK, .cmd = 'e', .name = "<new@x>" },
    { P("\0\0\0\x0b" "e<n@x>\0A\0B\0"), MILTER_P_TRAILING, .cmd = 'e' },
    { P("\0\0\0\x08" "e<new@x>"), MILTER_P_NONUL, .cmd = 'e' },
    { P("\0\0\0\x0a" "e<n@x>\0A\x01\0"), MILTER_P_TEXT, .cmd = 'e' },
    { P("\0\0\0\x07" "+<r@x>\0"), MILTER_P_OK, .cmd = '+', .name = "<r@x>" },
    { P("\0\0\0\x0d" "+<r@x>\0extra\0"), MILTER_P_TRAILING, .cmd = '+' },
    { P("\0\0\0\x02" "+\0"), MILTER_P_TEXT, .cmd = '+' },
    { P("\0\0\0\x14" "2<r@x>\0NOTIFY=NEVER\0"), MILTER_P_OK, .cmd = '2', .name = "<r@x>", .value = "NOTIFY=NEVER" },
    { P("\0\0\0\x07" "2<r@x>\0"), MILTER_P_OK, .cmd = '2', .name = "<r@x>" },
    { P("\0\0\0\x07" "-<r@x>\0"), MILTER_P_OK, .cmd = '-', .name = "<r@x>" },
    { P("\0\0\0\x08" "-<r\n@x>\0"), MILTER_P_TEXT, .cmd = '-' },
    { P("\0\0\0\x06" "-<r@x>"), MILTER_P_NONUL, .cmd = '-' },
    /* body and quarantine */
    { P("\0\0\0\x07" "bli\0e\r\n"), MILTER_P_OK, .cmd = 'b', .bodylen = 6 },
    { P("\0\0\0\x01" "b"), MILTER_P_OK, .cmd = 'b', .bodylen = 0 },
    { P("\0\0\0\x08" "qreason\0"), MILTER_P_OK, .cmd = 'q', .value = "reason" },
    { P("\0\0\0\x07" "qreason"), MILTER_P_NONUL, .cmd = 'q' },
    { P("\0\0\0\x09" "qreason\0x"), MILTER_P_TRAILING, .cmd = 'q' },
};

static void check_str(size_t i, const char *what, const char *got, const char *want)
{
    if (want == NULL && got != NULL)
        fail_msg("case %zu: %s is \"%s\", want NULL", i, what, got);
    if (want != NULL && (got == NULL || strcmp(got, want) != 0))
        fail_msg("case %zu: %s is \"%s\", want \"%s\"", i, what, got != NULL ? got : "(null)", want);
}

static void test_decode_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof dcases / sizeof dcases[0]; i++) {
        const struct dcase *c = &dcases[i];
        const unsigned char *p = (const unsigned char *)c->in;
        uint32_t len = 0;
        enum milter_perr e = milter_frame(p, c->inlen, MILTER_PACKET_MAX, &len);
        struct milter_reply r;
        memset(&r, 0, sizeof r);
        if (e == MILTER_P_OK)
            e = milter_decode(p + 4, len, &r);
        if (e != c->want)
            fail_msg("case %zu (%s): got \"%s\", want \"%s\"", i, show(c->in, c->inlen), milter_perr_str(e),
                     milter_perr_str(c->want));
        if (c->want == MILTER_P_MORE || c->want == MILTER_P_ZERO || c->want == MILTER_P_TOOBIG)
            continue;
        if (r.cmd != c->cmd)
            fail_msg("case %zu: cmd 0x%02x, want 0x%02x", i, (unsigned char)r.cmd, (unsigned char)c->cmd);
        if (c->want != MILTER_P_OK)
            continue;
        check_str(i, "name", r.name, c->name);
        check_str(i, "value", r.value, c->value);
        assert_int_equal(r.index, c->index);
        assert_int_equal(r.bodylen, c->bodylen);
        assert_int_equal(r.code, c->code);
        check_str(i, "reply", c->reply != NULL ? r.reply : NULL, c->reply);
        if (c->cmd == 'b' && c->bodylen > 0 && memcmp(r.body, "li\0e\r\n", 6) != 0)
            fail_msg("case %zu: body \"%s\"", i, show(r.body, r.bodylen));
    }
}

/* A long reply code text is cut to one SMTP line. */
static void test_replycode_long(void **state)
{
    (void)state;
    char text[3000], out[MILTER_REPLY_MAX];
    int code;
    snprintf(text, sizeof text, "550-5.7.1 ");
    memset(text + 10, 'a', 1000);
    snprintf(text + 1010, sizeof text - 1010, "\r\n550 5.7.1 tail");
    assert_int_equal(milter_replycode(text, &code, out), MILTER_P_OK);
    assert_int_equal(code, 550);
    assert_int_equal(strlen(out), MILTER_REPLY_MAX - 1);
    assert_memory_equal(out, "550 5.7.1 aaaa", 14);
}

/* ---- negotiation ---- */

static void test_optneg_table(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t inlen;
        enum milter_perr want_decode, want_neg;
        uint32_t version, actions, proto;     /* the proto after negotiation */
        int stage;                              /* a stage whose list is checked, -1: all NULL */
        const char *list;
    } cases[] = {
        { P("\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\0\x10\x00"), MILTER_P_OK, MILTER_P_OK, 6, 0x1ff, 0x1000, -1, NULL },
        { P("\0\0\0\x0dO\0\0\0\x02\0\0\0\x03\0\0\0\x7f"), MILTER_P_OK, MILTER_P_OK, 2, 0x3, 0x7f, -1, NULL },
        { P("\0\0\0\x0dO\0\0\0\x06\0\0\0\0\xff\xff\xff\xff"), MILTER_P_OK, MILTER_P_OK, 6, 0, MILTER_MY_PROTO, -1,
          NULL },
        { P("\0\0\0\x1fO\0\0\0\x06\0\0\x01\0\0\0\0\0\0\0\0\x03{rcpt_addr} i\0"), MILTER_P_OK, MILTER_P_OK, 6, 0x100, 0,
          3, "{rcpt_addr} i" },
        { P("\0\0\0\x13O\0\0\0\x06\0\0\x01\0\0\0\0\0\0\0\0\x09x\0"), MILTER_P_OK, MILTER_P_OK, 6, 0x100, 0, -1,
          NULL },   /* an unknown stage is ignored */
        { P("\0\0\0\x12O\0\0\0\x06\0\0\x01\0\0\0\0\0\0\0\0\x03x"), MILTER_P_NONUL, 0, 0, 0, 0, -1, NULL },
        { P("\0\0\0\x0fO\0\0\0\x06\0\0\x01\0\0\0\0\0\0\0"), MILTER_P_SHORT, 0, 0, 0, 0, -1, NULL },
        { P("\0\0\0\x0cO\0\0\0\x06\0\0\x01\0\0\0\0"), MILTER_P_SHORT, 0, 0, 0, 0, -1, NULL },
        { P("\0\0\0\x0dO\0\0\0\x01\0\0\0\0\0\0\0\0"), MILTER_P_OK, MILTER_P_VERSION, 0, 0, 0, -1, NULL },
        { P("\0\0\0\x0dO\0\0\0\x07\0\0\0\0\0\0\0\0"), MILTER_P_OK, MILTER_P_VERSION, 0, 0, 0, -1, NULL },
        { P("\0\0\0\x0dO\0\0\0\x06\0\0\x02\0\0\0\0\0"), MILTER_P_OK, MILTER_P_ACTIONS, 0, 0, 0, -1, NULL },
        { P("\0\0\0\x1fO\0\0\0\x06\0\0\0\xff\0\0\0\0\0\0\0\x03{rcpt_addr} i\0"), MILTER_P_OK, MILTER_P_SYMLIST, 0, 0,
          0, -1, NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t len;
        struct milter_reply r;
        if (milter_frame((const unsigned char *)cases[i].in, cases[i].inlen, MILTER_PACKET_MAX, &len) != MILTER_P_OK)
            fail_msg("case %zu: bad test packet", i);
        enum milter_perr e = milter_decode((const unsigned char *)cases[i].in + 4, len, &r);
        if (e != cases[i].want_decode)
            fail_msg("case %zu: decode \"%s\"", i, milter_perr_str(e));
        if (e != MILTER_P_OK)
            continue;
        assert_int_equal(r.cmd, 'O');
        uint32_t proto = 0;
        e = milter_negotiate(&r, MILTER_MY_ACTIONS, MILTER_MY_PROTO, &proto);
        if (e != cases[i].want_neg)
            fail_msg("case %zu: negotiate \"%s\"", i, milter_perr_str(e));
        if (e != MILTER_P_OK)
            continue;
        assert_int_equal(r.version, cases[i].version);
        assert_int_equal(r.actions, cases[i].actions);
        assert_int_equal(proto, cases[i].proto);
        for (int k = 0; k < MILTER_STAGES; k++)
            check_str(i, "symlist", r.symlist[k], k == cases[i].stage ? cases[i].list : NULL);
    }
}

/* The offer: version 6, every action, every step but RCPT_REJ and HDR_LEADSPC. */
static void test_offer(void **state)
{
    (void)state;
    assert_int_equal(MILTER_MY_VERSION, 6);
    assert_int_equal(MILTER_MY_ACTIONS, 0x1ff);
    assert_int_equal(MILTER_MY_PROTO, 0x000ff7ff);
}

/* ---- modifications ---- */

static void test_mod_actions(void **state)
{
    (void)state;
    static const struct { char cmd; uint32_t action; enum milter_mod_type type; } cases[] = {
        { SMFIR_ADDHEADER, SMFIF_ADDHDRS, MM_ADDHEADER },
        { SMFIR_INSHEADER, SMFIF_ADDHDRS, MM_INSHEADER },
        { SMFIR_CHGHEADER, SMFIF_CHGHDRS, MM_CHGHEADER },
        { SMFIR_CHGFROM, SMFIF_CHGFROM, MM_CHGFROM },
        { SMFIR_ADDRCPT, SMFIF_ADDRCPT, MM_ADDRCPT },
        { SMFIR_ADDRCPT_PAR, SMFIF_ADDRCPT_PAR, MM_ADDRCPT_PAR },
        { SMFIR_DELRCPT, SMFIF_DELRCPT, MM_DELRCPT },
        { SMFIR_REPLBODY, SMFIF_CHGBODY, MM_REPLBODY },
        { SMFIR_QUARANTINE, SMFIF_QUARANTINE, MM_QUARANTINE },
        { SMFIR_CONTINUE, 0, 0 },
        { SMFIR_PROGRESS, 0, 0 },
        { SMFIR_REPLYCODE, 0, 0 },
        { 'Z', 0, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum milter_mod_type t = 0;
        assert_int_equal(milter_mod_action(cases[i].cmd, &t), cases[i].action);
        if (cases[i].action != 0)
            assert_int_equal(t, cases[i].type);
    }
}

/* Body chunks of one milter make one replacement, bounded by MILTER_REPLBODY_MAX. */
static void test_mods_body(void **state)
{
    (void)state;
    static unsigned char chunk[1024 * 1024];
    memset(chunk, 'b', sizeof chunk);
    struct milter_mods mm = { 0 };
    size_t mine = 0, other = 0;
    struct milter_reply r = { .cmd = SMFIR_REPLBODY, .body = chunk, .bodylen = sizeof chunk };
    struct milter_reply h = { .cmd = SMFIR_ADDHEADER, .name = "X-A", .value = "v" };
    struct milter_reply q = { .cmd = SMFIR_QUARANTINE, .value = "bad\r\nreason" };
    assert_true(milter_mods_add(&mm, &r, "m1", &mine));
    assert_true(milter_mods_add(&mm, &h, "m1", &mine));
    assert_true(milter_mods_add(&mm, &q, "m2", &other));
    assert_true(milter_mods_add(&mm, &r, "m2", &other));
    for (int i = 1; i < MILTER_REPLBODY_MAX / (int)sizeof chunk; i++)
        assert_true(milter_mods_add(&mm, &r, "m1", &mine));
    r.bodylen = 1;
    assert_false(milter_mods_add(&mm, &r, "m1", &mine));
    assert_int_equal(mm.n, 4);
    assert_int_equal(mine, 1);
    assert_int_equal(other, 4);
    assert_int_equal(mm.v[0].body.len, MILTER_REPLBODY_MAX);
    assert_int_equal(mm.v[3].body.len, sizeof chunk);
    assert_string_equal(mm.v[1].name, "X-A");
    assert_string_equal(mm.v[2].value, "bad\\x0d\\x0areason");
    assert_string_equal(mm.v[2].milter, "m2");
    milter_mods_truncate(&mm, 2);
    assert_int_equal(mm.n, 2);
    milter_mods_release(&mm);
    milter_mods_release(&mm);
}

/* ---- endpoints and macros ---- */

static void test_endpoint_table(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        int family;             /* 0: invalid */
        const char *addr;       /* IP or path */
        int port;
        const char *why;
    } cases[] = {
        { "inet:8890@127.0.0.1", AF_INET, "127.0.0.1", 8890, NULL },
        { "inet:127.0.0.1:8890", AF_INET, "127.0.0.1", 8890, NULL },
        { "inet:localhost:25", AF_INET, "127.0.0.1", 25, NULL },
        { "inet:25@localhost", AF_INET, "127.0.0.1", 25, NULL },
        { "inet6:25@::1", AF_INET6, "::1", 25, NULL },
        { "inet:[::1]:65535", AF_INET6, "::1", 65535, NULL },
        { "unix:/run/x.sock", AF_UNIX, "/run/x.sock", 0, NULL },
        { "local:/x", AF_UNIX, "/x", 0, NULL },
        { "inet:host.example:25", 0, NULL, 0, "host is not an IP address" },
        { "inet:0@127.0.0.1", 0, NULL, 0, "bad port" },
        { "inet:70000@127.0.0.1", 0, NULL, 0, "bad port" },
        { "inet:+25@127.0.0.1", 0, NULL, 0, "bad port" },
        { "inet:2x5@127.0.0.1", 0, NULL, 0, "bad port" },
        { "inet:127.0.0.1", 0, NULL, 0, "no port" },
        { "inet:@127.0.0.1", 0, NULL, 0, "bad host or port" },
        { "inet:25@", 0, NULL, 0, "bad host or port" },
        { "tcp:1@127.0.0.1", 0, NULL, 0, "unknown transport" },
        { "/run/x.sock", 0, NULL, 0, "no transport: want inet:port@host or unix:/path" },
        { "unix:", 0, NULL, 0, "bad unix socket path" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        const char *why = NULL;
        bool ok = milter_endpoint(cases[i].spec, &ss, &len, &why);
        if (ok != (cases[i].family != 0))
            fail_msg("%s: %s", cases[i].spec, ok ? "accepted" : why);
        if (!ok) {
            assert_string_equal(why, cases[i].why);
            continue;
        }
        assert_int_equal(ss.ss_family, cases[i].family);
        char addr[120];
        unsigned port;
        milter_addr((struct sockaddr *)&ss, addr, sizeof addr, &port);
        assert_string_equal(addr, cases[i].addr);
        assert_int_equal(port, cases[i].port);
    }
    struct milter_conf bad = { .name = "m1", .socket = "inet:x@y" };
    struct buf err = BUF_INIT;
    assert_false(milter_conf_check(&bad, &err));
    assert_string_equal(buf_cstr(&err), "milter m1: inet:x@y: bad port");
    buf_release(&err);
}

static void test_macro_names(void **state)
{
    (void)state;
    struct milter_macros mm = { 0 };
    milter_macros_set(&mm, "{i}", "Q1");
    milter_macros_set(&mm, "auth_authen", "bob");
    assert_string_equal(milter_macros_get(&mm, "i"), "Q1");
    assert_string_equal(milter_macros_get(&mm, "{auth_authen}"), "bob");
    assert_string_equal(milter_macros_get(&mm, "auth_authen"), "bob");
    milter_macros_set(&mm, "{auth_authen}", "alice");
    assert_string_equal(milter_macros_get(&mm, "auth_authen"), "alice");
    assert_int_equal(mm.n, 2);
    milter_macros_set(&mm, "i", NULL);
    assert_null(milter_macros_get(&mm, "{i}"));
    milter_macros_set(&mm, "nothing", NULL);
    assert_int_equal(mm.n, 1);
    milter_macros_release(&mm);
    milter_macros_release(&mm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_table),
        cmocka_unit_test(test_decode_table),
        cmocka_unit_test(test_replycode_long),
        cmocka_unit_test(test_optneg_table),
        cmocka_unit_test(test_offer),
        cmocka_unit_test(test_mod_actions),
        cmocka_unit_test(test_mods_body),
        cmocka_unit_test(test_endpoint_table),
        cmocka_unit_test(test_macro_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
