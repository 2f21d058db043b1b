/*
 * test_edge_data.c - unit tests of the DATA / BDAT content decoder (edge/edge_data.c).
 *
 * The SMTP smuggling table feeds each near-terminator whole, byte by byte and in every 2-way
 * split; further tables cover dot transparency, bare CR / LF, long lines, the terminator with
 * pipelined commands after it, BDAT chunks and finish(). Every corpus message is also decoded at
 * every split point and in random splits (fixed seed) and must give the same result as whole.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "edge_data.h"

/* A string literal with its length, so that embedded NULs count. */
#define S(lit) lit, sizeof(lit) - 1

/* What one decode produced. */
struct result {
    struct buf out;
    size_t consumed;            /* sum of what feed returned */
    int done_sets;              /* feeds after which done went from false to true */
    bool done;
    unsigned long bare_cr, bare_lf, long_lines;
    unsigned long long raw_bytes;
};

/*
 * Decodes in[0..len) cut at the increasing positions cuts[0..ncuts), checking the feed contract
 * on every call: all bytes consumed until done, nothing after it.
 */
static void decode_cuts(enum body_mode mode, size_t max_line, const char *in, size_t len,
                        const size_t *cuts, size_t ncuts, bool finish, bool store, struct result *r)
{
    struct body_decoder d;
    size_t from = 0;

    memset(r, 0, sizeof *r);
    body_decoder_init(&d, mode, max_line);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        bool was_done = d.done;
        size_t got = body_decoder_feed(&d, in + from, to - from, store ? &r->out : NULL);
        if (was_done)
            assert_int_equal(got, 0);
        else if (!d.done)
            assert_int_equal(got, to - from);
        else
            assert_true(got <= to - from);
        if (!was_done && d.done)
            r->done_sets++;
        r->consumed += got;
        from = to;
    }
    if (finish)
        body_decoder_finish(&d, store ? &r->out : NULL);
    r->done = d.done;
    r->bare_cr = d.bare_cr;
    r->bare_lf = d.bare_lf;
    r->long_lines = d.long_lines;
    r->raw_bytes = d.raw_bytes;
    assert_int_equal(r->raw_bytes, r->consumed);
}

static void decode_whole(enum body_mode mode, size_t max_line, const char *in, size_t len,
                         bool finish, struct result *r)
{
    decode_cuts(mode, max_line, in, len, NULL, 0, finish, true, r);
}

static void assert_same(const struct result *a, const struct result *b)
{
    assert_int_equal(a->out.len, b->out.len);
    assert_memory_equal(buf_cstr(&a->out), buf_cstr(&b->out), a->out.len);
    assert_int_equal(a->consumed, b->consumed);
    assert_int_equal(a->done_sets, b->done_sets);
    assert_int_equal(a->done, b->done);
    assert_int_equal(a->bare_cr, b->bare_cr);
    assert_int_equal(a->bare_lf, b->bare_lf);
    assert_int_equal(a->long_lines, b->long_lines);
}

static void assert_out(const struct result *r, const char *want, size_t want_len)
{
    assert_int_equal(r->out.len, want_len);
    assert_memory_equal(buf_cstr(&r->out), want, want_len);
}

/* ---- SMTP smuggling ---------------------------------------------------------------------- */

static const struct smuggle_row {
    const char *seq;
    size_t seq_len;
    const char *decoded;        /* what seq (and the line end it forces) becomes */
    size_t decoded_len;
    unsigned long bare_cr, bare_lf;
} smuggle_rows[] = {
    { S("\n.\n"), S("\r\n\r\n"), 0, 2 },
    { S("\r.\r"), S("\r\n\r\n"), 2, 0 },
    { S("\r.\n"), S("\r\n\r\n"), 1, 1 },
    { S("\n.\r"), S("\r\n\r\n"), 1, 1 },
    { S("\n.\r\n"), S("\r\n\r\n"), 0, 1 },
    { S("\r\n.\n"), S("\r\n\r\n"), 0, 1 },
    { S("\r.\r\n"), S("\r\n\r\n"), 1, 0 },
    { S("\r\n.\r"), S("\r\n\r\n"), 1, 0 },
    { S("\r\n\x00.\r\n"), S("\r\n\x00.\r\n"), 0, 0 },
    { S("\r\n.\r\r\n"), S("\r\n\r\n\r\n"), 1, 0 },
    { S("\r\r\n.\r\r\n"), S("\r\n\r\n\r\n\r\n"), 2, 0 },
};

#define SMUGGLE_HEAD "Subject: a\r\n\r\nbody"
#define SMUGGLE_TAIL "MAIL FROM:<evil>\r\n\r\n.\r\n"
#define SMUGGLE_TAIL_OUT "MAIL FROM:<evil>\r\n\r\n"

static void check_smuggle_result(const struct smuggle_row *row, const struct result *r,
                                 size_t in_len)
{
    struct buf want = BUF_INIT;
    buf_append(&want, S(SMUGGLE_HEAD));
    buf_append(&want, row->decoded, row->decoded_len);
    buf_append(&want, S(SMUGGLE_TAIL_OUT));

    assert_int_equal(r->done_sets, 1);
    assert_true(r->done);
    assert_int_equal(r->consumed, in_len);
    assert_out(r, want.data, want.len);
    assert_non_null(memmem(r->out.data, r->out.len, S("\r\nMAIL FROM:<evil>\r\n")));
    assert_int_equal(r->bare_cr, row->bare_cr);
    assert_int_equal(r->bare_lf, row->bare_lf);
    buf_release(&want);
}

static void test_smuggling(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof smuggle_rows / sizeof smuggle_rows[0]; i++) {
        const struct smuggle_row *row = &smuggle_rows[i];
        struct buf in = BUF_INIT;
        struct result r;

        buf_append(&in, S(SMUGGLE_HEAD));
        buf_append(&in, row->seq, row->seq_len);
        buf_append(&in, S(SMUGGLE_TAIL));

        decode_whole(BODY_MODE_DATA, 1000, in.data, in.len, false, &r);
        check_smuggle_result(row, &r, in.len);
        buf_release(&r.out);

        size_t *cuts = malloc(in.len * sizeof *cuts);
        for (size_t k = 0; k < in.len; k++)
            cuts[k] = k + 1;
        decode_cuts(BODY_MODE_DATA, 1000, in.data, in.len, cuts, in.len - 1, false, true, &r);
        check_smuggle_result(row, &r, in.len);
        buf_release(&r.out);
        free(cuts);

        for (size_t cut = 0; cut <= in.len; cut++) {
            decode_cuts(BODY_MODE_DATA, 1000, in.data, in.len, &cut, 1, false, true, &r);
            check_smuggle_result(row, &r, in.len);
            buf_release(&r.out);
        }
        buf_release(&in);
    }
}

/* ---- terminator, transparency, bare CR/LF: exact outputs --------------------------------- */

static const struct data_row {
    const char *in;
    size_t in_len;
    const char *out;
    size_t out_len;
    size_t consumed;            /* 0: all of in */
    bool done;
    unsigned long bare_cr, bare_lf;
} data_rows[] = {
    /* empty message, terminator at the very start */
    { S(".\r\n"), S(""), 3, true, 0, 0 },
    { S(".\r\nQUIT\r\n"), S(""), 3, true, 0, 0 },
    /* plain message; the CR LF before the terminator stays with the content */
    { S("a\r\n.\r\n"), S("a\r\n"), 6, true, 0, 0 },
    { S("Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<y>\r\n"),
      S("Subject: x\r\n\r\nhello\r\n"), 24, true, 0, 0 },
    /* dot transparency */
    { S("..\r\n.\r\n"), S(".\r\n"), 7, true, 0, 0 },
    { S("..a\r\n.\r\n"), S(".a\r\n"), 8, true, 0, 0 },
    { S("...\r\n.\r\n"), S("..\r\n"), 8, true, 0, 0 },
    { S("a\r\n.b\r\n.\r\n"), S("a\r\nb\r\n"), 10, true, 0, 0 },
    { S(".a.b.\r\n.\r\n"), S("a.b.\r\n"), 10, true, 0, 0 },
    { S("x.\r\n.\r\n"), S("x.\r\n"), 7, true, 0, 0 },
    { S(". \r\n.\r\n"), S(" \r\n"), 7, true, 0, 0 },
    /* a dot after a normalised line end is removed but never terminates */
    { S(".\n.\r\n.\r\n"), S("\r\n\r\n"), 8, true, 0, 1 },
    { S("a\n.\r\n"), S("a\r\n\r\n"), 0, false, 0, 1 },
    { S("a\r.\r\n"), S("a\r\n\r\n"), 0, false, 1, 0 },
    { S("a\n..\r\n.\r\n"), S("a\r\n.\r\n"), 9, true, 0, 1 },
    /* bare LF / bare CR become CR LF */
    { S("a\nb\r\n.\r\n"), S("a\r\nb\r\n"), 8, true, 0, 1 },
    { S("a\rb\r\n.\r\n"), S("a\r\nb\r\n"), 8, true, 1, 0 },
    { S("\n\n\r\r\n.\r\n"), S("\r\n\r\n\r\n\r\n"), 8, true, 1, 2 },
    { S("a\r\r\r\n.\r\n"), S("a\r\n\r\n\r\n"), 8, true, 2, 0 },
    { S("\r"), S(""), 0, false, 0, 0 },
    { S("\r\n"), S("\r\n"), 0, false, 0, 0 },
    /* the CR LF . CR LF after a bare CR or LF then real CR LF is a real terminator */
    { S("a\r\r\n.\r\nX"), S("a\r\n\r\n"), 7, true, 1, 0 },
    { S("a\n\r\n.\r\nX"), S("a\r\n\r\n"), 7, true, 0, 1 },
    /* NULs are content */
    { S("\x00\r\n\x00.\r\n.\r\n"), S("\x00\r\n\x00.\r\n"), 10, true, 0, 0 },
    { S(".\x00\r\n.\r\n"), S("\x00\r\n"), 7, true, 0, 0 },
    /* an unterminated dot line is not the terminator */
    { S("a\r\n."), S("a\r\n"), 0, false, 0, 0 },
    { S("a\r\n.\r"), S("a\r\n"), 0, false, 0, 0 },
    { S("a\r\n.\r."), S("a\r\n\r\n"), 0, false, 1, 0 },
};

static void test_data_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof data_rows / sizeof data_rows[0]; i++) {
        const struct data_row *row = &data_rows[i];
        struct result r, split;
        size_t consumed = row->consumed ? row->consumed : row->in_len;

        decode_whole(BODY_MODE_DATA, 1000, row->in, row->in_len, false, &r);
        assert_out(&r, row->out, row->out_len);
        assert_int_equal(r.consumed, consumed);
        assert_int_equal(r.done, row->done);
        assert_int_equal(r.done_sets, row->done ? 1 : 0);
        assert_int_equal(r.bare_cr, row->bare_cr);
        assert_int_equal(r.bare_lf, row->bare_lf);

        for (size_t cut = 0; cut <= row->in_len; cut++) {
            decode_cuts(BODY_MODE_DATA, 1000, row->in, row->in_len, &cut, 1, false, true, &split);
            assert_same(&r, &split);
            buf_release(&split.out);
        }
        buf_release(&r.out);
    }
}

/* After the terminator nothing more is consumed, whatever is fed. */
static void test_data_after_done(void **state)
{
    (void)state;
    struct body_decoder d;
    struct buf out = BUF_INIT;

    body_decoder_init(&d, BODY_MODE_DATA, 1000);
    assert_int_equal(body_decoder_feed(&d, S("hi\r\n.\r\nRSET\r\n"), &out), 7);
    assert_true(d.done);
    assert_int_equal(body_decoder_feed(&d, S("RSET\r\n"), &out), 0);
    assert_int_equal(body_decoder_feed(&d, S(".\r\n"), &out), 0);
    assert_string_equal(buf_cstr(&out), "hi\r\n");
    assert_int_equal(d.raw_bytes, 7);
    buf_release(&out);
}

/* out == NULL: the same parse and counts, nothing stored. */
static void test_data_no_output(void **state)
{
    (void)state;
    static const char in[] = "a\nb\rc\r\n..d\r\n0123456789012\r\n.\r\nQUIT\r\n";
    struct result with, without;

    decode_whole(BODY_MODE_DATA, 10, in, sizeof in - 1, false, &with);
    decode_cuts(BODY_MODE_DATA, 10, in, sizeof in - 1, NULL, 0, false, false, &without);
    assert_out(&with, S("a\r\nb\r\nc\r\n.d\r\n0123456789012\r\n"));
    assert_int_equal(without.out.len, 0);
    assert_null(without.out.data);
    assert_int_equal(with.consumed, without.consumed);
    assert_int_equal(with.consumed, sizeof in - 1 - 6);
    assert_true(without.done);
    assert_int_equal(without.bare_cr, 1);
    assert_int_equal(without.bare_lf, 1);
    assert_int_equal(without.long_lines, 1);
    buf_release(&with.out);
}

/* ---- long lines -------------------------------------------------------------------------- */

static const struct long_row {
    enum body_mode mode;
    size_t max_line;
    const char *in;
    size_t in_len;
    bool finish;
    unsigned long long_lines;
} long_rows[] = {
    { BODY_MODE_DATA, 10, S("12345678\r\n.\r\n"), false, 0 },           /* exactly 10 */
    { BODY_MODE_DATA, 10, S("123456789\r\n.\r\n"), false, 1 },          /* 11 */
    { BODY_MODE_DATA, 10, S("..2345678\r\n.\r\n"), false, 0 },          /* stuffed dot not counted */
    { BODY_MODE_DATA, 10, S("...3456789\r\n.\r\n"), false, 1 },
    { BODY_MODE_DATA, 10, S("...345678\r\n.\r\n"), false, 0 },
    { BODY_MODE_DATA, 10, S("123456789\n.\r\n"), false, 1 },            /* stored with CR LF: 11 */
    { BODY_MODE_DATA, 10, S("12345678\n.\r\n"), false, 0 },
    { BODY_MODE_DATA, 10, S("123456789\r12345678\r\n.\r\n"), false, 1 },
    { BODY_MODE_DATA, 10, S("123456789\r\n123456789\r\nab\r\n123456789012\r\n.\r\n"), false, 3 },
    { BODY_MODE_DATA, 0, S("123456789012345678901234567890\r\n.\r\n"), false, 0 },   /* 0: off */
    { BODY_MODE_DATA, 1000, S("\r\n\r\n.\r\n"), false, 0 },
    { BODY_MODE_BDAT, 10, S("123456789"), true, 1 },                    /* finish adds CR LF */
    { BODY_MODE_BDAT, 10, S("12345678"), true, 0 },
    { BODY_MODE_BDAT, 10, S("123456789"), false, 0 },                   /* line not ended yet */
    { BODY_MODE_BDAT, 10, S("123456789\r\nab\r\n123456789\r"), true, 2 },
};

static void test_long_lines(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof long_rows / sizeof long_rows[0]; i++) {
        const struct long_row *row = &long_rows[i];
        struct result r, split;

        decode_whole(row->mode, row->max_line, row->in, row->in_len, row->finish, &r);
        assert_int_equal(r.long_lines, row->long_lines);
        for (size_t cut = 0; cut <= row->in_len; cut++) {
            decode_cuts(row->mode, row->max_line, row->in, row->in_len, &cut, 1, row->finish,
                        true, &split);
            assert_same(&r, &split);
            buf_release(&split.out);
        }
        buf_release(&r.out);
    }
}

/* Long lines are counted, never cut or changed. */
static void test_long_line_kept(void **state)
{
    (void)state;
    struct buf in = BUF_INIT, want = BUF_INIT;
    struct result r;

    for (int i = 0; i < 5000; i++)
        buf_putc(&in, (char)('a' + i % 26));
    buf_append(&want, in.data, in.len);
    buf_append(&in, S("\r\n.\r\n"));
    buf_append(&want, S("\r\n"));
    decode_whole(BODY_MODE_DATA, 1000, in.data, in.len, false, &r);
    assert_out(&r, want.data, want.len);
    assert_int_equal(r.long_lines, 1);
    assert_true(r.done);
    buf_release(&r.out);
    buf_release(&in);
    buf_release(&want);
}

/* ---- BDAT -------------------------------------------------------------------------------- */

/* Chunks separated by '|' in the row text (no '|' is used as content). */
static const struct bdat_row {
    const char *chunks;
    size_t chunks_len;
    const char *out;            /* after finish */
    size_t out_len;
    unsigned long bare_cr, bare_lf;
} bdat_rows[] = {
    { S(""), S(""), 0, 0 },
    { S("a\r\n"), S("a\r\n"), 0, 0 },
    { S("a"), S("a\r\n"), 0, 0 },
    { S("a\r|\nb"), S("a\r\nb\r\n"), 0, 0 },                    /* CR LF across chunks is real */
    { S("a\r|b"), S("a\r\nb\r\n"), 1, 0 },
    { S("a\r|\r|\n"), S("a\r\n\r\n"), 1, 0 },
    { S("a\r"), S("a\r\n"), 1, 0 },                             /* finish settles the CR */
    { S("a\r\n|\r"), S("a\r\n\r\n"), 1, 0 },
    { S("a\n|b\n"), S("a\r\nb\r\n"), 0, 2 },
    { S("|\n|"), S("\r\n"), 0, 1 },
    { S("\r\n.\r\n|..x\r\n"), S("\r\n.\r\n..x\r\n"), 0, 0 },     /* no terminator, no unstuffing */
    { S(".\r\n"), S(".\r\n"), 0, 0 },
    { S("\x00|\x00"), S("\x00\x00\r\n"), 0, 0 },
    { S("a\r\n\r\n"), S("a\r\n\r\n"), 0, 0 },
};

static void test_bdat(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bdat_rows / sizeof bdat_rows[0]; i++) {
        const struct bdat_row *row = &bdat_rows[i];
        struct buf in = BUF_INIT;
        size_t cuts[8], ncuts = 0;
        struct result r, whole, split;

        for (size_t k = 0; k < row->chunks_len; k++) {
            if (row->chunks[k] == '|')
                cuts[ncuts++] = in.len;
            else
                buf_putc(&in, row->chunks[k]);
        }
        decode_cuts(BODY_MODE_BDAT, 1000, buf_cstr(&in), in.len, cuts, ncuts, true, true, &r);
        assert_out(&r, row->out, row->out_len);
        assert_false(r.done);
        assert_int_equal(r.consumed, in.len);
        assert_int_equal(r.bare_cr, row->bare_cr);
        assert_int_equal(r.bare_lf, row->bare_lf);

        decode_whole(BODY_MODE_BDAT, 1000, buf_cstr(&in), in.len, true, &whole);
        assert_same(&r, &whole);
        for (size_t cut = 0; cut <= in.len; cut++) {
            decode_cuts(BODY_MODE_BDAT, 1000, buf_cstr(&in), in.len, &cut, 1, true, true, &split);
            assert_same(&r, &split);
            buf_release(&split.out);
        }
        buf_release(&r.out);
        buf_release(&whole.out);
        buf_release(&in);
    }
}

/* Before finish, a trailing CR is held back: the next chunk may bring its LF. */
static void test_bdat_pending_cr(void **state)
{
    (void)state;
    struct body_decoder d;
    struct buf out = BUF_INIT;

    body_decoder_init(&d, BODY_MODE_BDAT, 1000);
    assert_int_equal(body_decoder_feed(&d, S("x\r"), &out), 2);
    assert_string_equal(buf_cstr(&out), "x");
    assert_int_equal(body_decoder_feed(&d, S("\ny\r"), &out), 3);
    assert_string_equal(buf_cstr(&out), "x\r\ny");
    assert_int_equal(d.bare_cr, 0);
    body_decoder_finish(&d, &out);
    assert_string_equal(buf_cstr(&out), "x\r\ny\r\n");
    assert_int_equal(d.bare_cr, 1);
    assert_false(d.done);
    assert_int_equal(d.raw_bytes, 5);
    buf_release(&out);
}

/* finish does nothing in DATA mode: the terminator settled the content. */
static void test_finish_data_noop(void **state)
{
    (void)state;
    struct body_decoder d;
    struct buf out = BUF_INIT;

    body_decoder_init(&d, BODY_MODE_DATA, 1000);
    assert_int_equal(body_decoder_feed(&d, S("a\r\n.\r\n"), &out), 6);
    body_decoder_finish(&d, &out);
    assert_string_equal(buf_cstr(&out), "a\r\n");
    buf_release(&out);
}

/* ---- split invariance over a corpus ------------------------------------------------------ */

static const struct corpus_row {
    const char *in;
    size_t len;
} corpus[] = {
    { S("Subject: a\r\n\r\nbody\n.\nMAIL FROM:<evil>\r\n\r\n.\r\n") },
    { S("Subject: a\r\n\r\nbody\r\n.\r\r\nMAIL FROM:<evil>\r\n\r\n.\r\nQUIT\r\n") },
    { S("..\r\n...\r\n.\n.\r.\r\n\r\n.x\r\n.\r\n") },
    { S("\r\r\r\n\n\n\r\n\r.\r\r\n.\r\n") },
    { S("a\x00\r\n\x00.\r\n.\x00\r\n.\r\n") },
    { S("line one is longer than twenty octets\r\nshort\r\n.\r\n") },
    { S("no terminator at all\r\n.\r") },
    { S(".\r\n") },
    { S("\r\n.\r\n") },
    { S("x\r\n.\r\n.\r\n.\r\n") },
};

/* xorshift64: deterministic, independent of the C library's rand(). */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void check_corpus_splits(enum body_mode mode, bool finish)
{
    uint64_t seed = 0x6d78676174650001ULL;

    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        const struct corpus_row *row = &corpus[i];
        struct result whole, split;
        size_t cuts[64];

        decode_whole(mode, 20, row->in, row->len, finish, &whole);
        for (size_t a = 0; a <= row->len; a++) {
            for (size_t b = a; b <= row->len; b++) {
                cuts[0] = a;
                cuts[1] = b;
                decode_cuts(mode, 20, row->in, row->len, cuts, 2, finish, true, &split);
                assert_same(&whole, &split);
                buf_release(&split.out);
            }
        }
        for (int round = 0; round < 500; round++) {
            size_t n = 0, pos = 0;
            while (n < 64) {
                pos += (size_t)(rng_next(&seed) % 6);
                if (pos > row->len)
                    break;
                cuts[n++] = pos;
            }
            decode_cuts(mode, 20, row->in, row->len, cuts, n, finish, true, &split);
            assert_same(&whole, &split);
            buf_release(&split.out);
        }
        buf_release(&whole.out);
    }
}

static void test_split_invariance_data(void **state)
{
    (void)state;
    check_corpus_splits(BODY_MODE_DATA, false);
}

static void test_split_invariance_bdat(void **state)
{
    (void)state;
    check_corpus_splits(BODY_MODE_BDAT, true);
}

/* Random pieces of trouble, whole vs random chunk sizes up to 4 KiB, in both modes. */
static void check_large_random(enum body_mode mode)
{
    static const struct { const char *p; size_t n; } pieces[] = {
        { S("a") }, { S("\r\n") }, { S("\n") }, { S("\r") }, { S(".") }, { S("..") },
        { S("\x00") }, { S("xyz ") }, { S("long line text ") },
    };
    uint64_t seed = 42;
    struct buf in = BUF_INIT;
    struct result whole, split;

    for (int i = 0; i < 200000; i++) {
        size_t k = (size_t)(rng_next(&seed) % (sizeof pieces / sizeof pieces[0]));
        buf_append(&in, pieces[k].p, pieces[k].n);
    }
    buf_append(&in, S("\r\n.\r\n"));
    decode_whole(mode, 40, in.data, in.len, mode == BODY_MODE_BDAT, &whole);
    assert_true(whole.bare_cr > 0 && whole.bare_lf > 0 && whole.long_lines > 0);
    if (mode == BODY_MODE_DATA)
        assert_true(whole.done);
    else
        assert_int_equal(whole.consumed, in.len);

    size_t *cuts = malloc(in.len * sizeof *cuts), n = 0, pos = 0;
    for (;;) {
        pos += 1 + (size_t)(rng_next(&seed) % 4096);
        if (pos >= in.len)
            break;
        cuts[n++] = pos;
    }
    decode_cuts(mode, 40, in.data, in.len, cuts, n, mode == BODY_MODE_BDAT, true, &split);
    assert_same(&whole, &split);
    free(cuts);
    buf_release(&split.out);
    buf_release(&whole.out);
    buf_release(&in);
}

static void test_large_random(void **state)
{
    (void)state;
    check_large_random(BODY_MODE_DATA);
    check_large_random(BODY_MODE_BDAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_data_table),
        cmocka_unit_test(test_data_after_done),
        cmocka_unit_test(test_data_no_output),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_long_line_kept),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_bdat_pending_cr),
        cmocka_unit_test(test_finish_data_noop),
        cmocka_unit_test(test_split_invariance_data),
        cmocka_unit_test(test_split_invariance_bdat),
        cmocka_unit_test(test_large_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
