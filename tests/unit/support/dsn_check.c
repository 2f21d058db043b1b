/*
 * dsn_check.c - test support: the structural DSN checker (see dsn_check.h).
 */
#include "dsn_check.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

static void fields_free(struct dsn_check_fields *fs)
{
    for (size_t i = 0; i < fs->n; i++) {
        free(fs->f[i].name);
        free(fs->f[i].value);
    }
    fs->n = 0;
}

void dsn_check_free(struct dsn_check_parsed *ps)
{
    fields_free(&ps->top);
    for (size_t i = 0; i < ps->nparts; i++) {
        fields_free(&ps->parts[i].hdr);
        free(ps->parts[i].content);
    }
    for (size_t i = 0; i < ps->ngroups; i++)
        fields_free(&ps->groups[i]);
    memset(ps, 0, sizeof *ps);
}

/* Every line ends in CR LF, no CR or LF alone, no line longer than 998 octets. */
static void check_lines(const char *s, size_t n)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            if (i + 1 >= n || s[i + 1] != '\n')
                fail_msg("bare CR at offset %zu", i);
            i++;
            col = 0;
            continue;
        }
        if (s[i] == '\n')
            fail_msg("bare LF at offset %zu", i);
        if (++col > 998)
            fail_msg("line over 998 octets at offset %zu", i);
    }
    if (n < 2 || s[n - 2] != '\r' || s[n - 1] != '\n')
        fail_msg("text does not end with CR LF");
}

/* Parses a header section at s (n bytes); returns the bytes used, blank line included. */
static size_t parse_fields(const char *s, size_t n, struct dsn_check_fields *fs)
{
    size_t pos = 0;
    while (pos < n) {
        const char *eol = memmem(s + pos, n - pos, "\r\n", 2);
        size_t len = eol != NULL ? (size_t)(eol - (s + pos)) : n - pos;
        const char *line = s + pos;
        pos += len + (eol != NULL ? 2 : 0);
        if (len == 0)
            break;
        if (line[0] == ' ' || line[0] == '\t') {
            if (fs->n == 0)
                fail_msg("continuation line before any field: %.*s", (int)len, line);
            struct dsn_check_field *f = &fs->f[fs->n - 1];
            size_t old = strlen(f->value);
            f->value = realloc(f->value, old + len + 1);
            memcpy(f->value + old, line, len);
            f->value[old + len] = '\0';
            continue;
        }
        const char *colon = memchr(line, ':', len);
        if (colon == NULL || colon == line)
            fail_msg("not a header field: %.*s", (int)len, line);
        for (const char *c = line; c < colon; c++) {
            if (*c <= ' ' || *c >= 0x7f)
                fail_msg("bad field name: %.*s", (int)len, line);
        }
        assert_true(fs->n < sizeof fs->f / sizeof fs->f[0]);
        const char *v = colon + 1;
        while (v < line + len && (*v == ' ' || *v == '\t'))
            v++;
        fs->f[fs->n].name = strndup(line, (size_t)(colon - line));
        fs->f[fs->n].value = strndup(v, (size_t)(line + len - v));
        fs->n++;
    }
    return pos;
}

const char *dsn_check_get(const struct dsn_check_fields *fs, const char *name)
{
    const char *found = NULL;
    for (size_t i = 0; i < fs->n; i++) {
        if (strcasecmp(fs->f[i].name, name) == 0) {
            if (found != NULL)
                fail_msg("field %s appears twice", name);
            found = fs->f[i].value;
        }
    }
    return found;
}

/* dsn_check_get, failing the test when the field is missing. */
static const char *need(const struct dsn_check_fields *fs, const char *name)
{
    const char *v = dsn_check_get(fs, name);
    if (v == NULL)
        fail_msg("field %s missing", name);
    return v;
}

void dsn_check_expect_fields(const struct dsn_check_fields *fs, const char *const (*want)[2], size_t n)
{
    assert_int_equal(fs->n, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(fs->f[i].name, want[i][0]);
        if (want[i][1] != NULL)
            assert_string_equal(fs->f[i].value, want[i][1]);
    }
}

/* An RFC 3463 status code: class 2, 4 or 5, then two numbers of one to three digits. */
static bool status_syntax_ok(const char *s)
{
    if ((s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    s += 2;
    for (int k = 0; k < 2; k++) {
        size_t d = strspn(s, "0123456789");
        if (d < 1 || d > 3)
            return false;
        s += d;
        if (k == 0 && *s++ != '.')
            return false;
    }
    return *s == '\0';
}

void dsn_check_parse(const char *s, size_t n, struct dsn_check_parsed *ps)
{
    memset(ps, 0, sizeof *ps);
    check_lines(s, n);
    size_t hlen = parse_fields(s, n, &ps->top);
    static const char *const once[] = { "From", "To", "Subject", "Date", "Message-ID",
                                        "MIME-Version", "Auto-Submitted", "Content-Type" };
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++)
        need(&ps->top, once[i]);
    assert_string_equal(need(&ps->top, "MIME-Version"), "1.0");
    assert_string_equal(need(&ps->top, "Auto-Submitted"), "auto-replied");

    const char *ct = need(&ps->top, "Content-Type");
    assert_true(strncmp(ct, "multipart/report; report-type=", 30) == 0);
    const char *bp = strstr(ct, "boundary=\"");
    assert_non_null(bp);
    bp += 10;
    const char *bq = strchr(bp, '"');
    assert_non_null(bq);
    assert_true(bq - bp > 0 && (size_t)(bq - bp) < sizeof ps->boundary);
    memcpy(ps->boundary, bp, (size_t)(bq - bp));
    assert_int_equal(strspn(ps->boundary, "abcdefghijklmnopqrstuvwxyz"
                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=?"),
                     strlen(ps->boundary));

    /* walk the body line by line: "--B" opens a part, "--B--" closes, nothing else starts
     * with "--B" */
    char delim[110], close[112];
    snprintf(delim, sizeof delim, "--%s", ps->boundary);
    snprintf(close, sizeof close, "--%s--", ps->boundary);
    ps->body = s + hlen;
    size_t pos = hlen, part_start = 0;
    bool in_part = false, closed = false;
    while (pos < n) {
        const char *eol = memmem(s + pos, n - pos, "\r\n", 2);
        size_t len = (size_t)(eol - (s + pos));
        const char *line = s + pos;
        bool is_delim = len == strlen(delim) && memcmp(line, delim, len) == 0;
        bool is_close = len == strlen(close) && memcmp(line, close, len) == 0;
        if (closed)
            fail_msg("text after the closing delimiter");
        if (!is_delim && !is_close && len >= strlen(delim) && memcmp(line, delim, strlen(delim)) == 0)
            fail_msg("boundary inside a part: %.*s", (int)len, line);
        if (is_delim || is_close) {
            if (in_part) {
                /* the CR LF before the delimiter belongs to it */
                assert_true(pos - 2 >= part_start);
                struct dsn_check_part *p = &ps->parts[ps->nparts++];
                size_t plen = pos - 2 - part_start;
                size_t used = parse_fields(s + part_start, plen, &p->hdr);
                p->content_len = plen - used;
                p->content = strndup(s + part_start + used, p->content_len);
                assert_non_null(dsn_check_get(&p->hdr, "Content-Type"));
                assert_true(ps->nparts < sizeof ps->parts / sizeof ps->parts[0]);
            }
            in_part = is_delim;
            closed = is_close;
            part_start = pos + len + 2;
        }
        pos += len + 2;
    }
    assert_true(closed);
    assert_true(ps->nparts == 2 || ps->nparts == 3);

    assert_true(strncmp(need(&ps->parts[0].hdr, "Content-Type"), "text/plain; charset=", 20) == 0);
    const char *st = need(&ps->parts[1].hdr, "Content-Type");
    assert_true(strcmp(st, "message/delivery-status") == 0 ||
                strcmp(st, "message/global-delivery-status") == 0);
    char want_ct[200];
    snprintf(want_ct, sizeof want_ct, "multipart/report; report-type=%s;\tboundary=\"%s\"",
             st + 8, ps->boundary);
    assert_string_equal(ct, want_ct);

    /* the delivery-status groups */
    const char *c = ps->parts[1].content;
    size_t cl = ps->parts[1].content_len, used = 0;
    while (used < cl) {
        assert_true(ps->ngroups < sizeof ps->groups / sizeof ps->groups[0]);
        used += parse_fields(c + used, cl - used, &ps->groups[ps->ngroups++]);
    }
    assert_true(ps->ngroups >= 2);
    assert_true(strncmp(need(&ps->groups[0], "Reporting-MTA"), "dns; ", 5) == 0);
    assert_null(dsn_check_get(&ps->groups[0], "Final-Recipient"));
    for (size_t g = 1; g < ps->ngroups; g++) {
        const char *fr = need(&ps->groups[g], "Final-Recipient");
        assert_true(strncmp(fr, "rfc822;", 7) == 0 || strncmp(fr, "utf-8;", 6) == 0);
        const char *a = need(&ps->groups[g], "Action");
        assert_true(strcmp(a, "failed") == 0 || strcmp(a, "delayed") == 0 ||
                    strcmp(a, "delivered") == 0 || strcmp(a, "relayed") == 0 ||
                    strcmp(a, "expanded") == 0);
        const char *sv = need(&ps->groups[g], "Status");
        if (!status_syntax_ok(sv))
            fail_msg("bad Status: %s", sv);
        assert_null(dsn_check_get(&ps->groups[g], "Reporting-MTA"));
    }
}
