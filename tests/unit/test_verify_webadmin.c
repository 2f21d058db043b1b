/*
 * test_verify_webadmin.c - the James WebAdmin verification source (mailbox-bridge/verify_webadmin.c)
 * against real HTTP servers on loopback.
 *
 * Apache James cannot run here, so two stand-ins (support/http_server.h) answer its
 * "HEAD /users/{address}" route:
 * - Python's http.server serving a mkdtemp directory, in which the empty file users/<address>
 *   stands for an existing user (200), a missing file for an unknown one (404), and a directory
 *   for a redirect (301). It decodes the escaped path segment, as James does.
 * - An in-process peer on the test's libevent loop for what http.server cannot do: exact request
 *   bytes (escaping, the bearer token), chosen status lines, malformed replies, silence, and
 *   counting connections.
 * Every server is killed at exit; the temp directory is removed and libcurl's global state
 * released, so that ASan's leak check stays clean without suppressions.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/event.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "support/http_server.h"
#include "support/peer.h"
#include "verify_sources.h"

static char tmpdir[64];             /* mkdtemp: www/ (served) and the servers' output */
static char wwwdir[96];             /* the directory http.server serves */
static struct event_base *base;

/* ---- loop helpers ---------------------------------------------------------------------------- */

/* Runs the loop until *count reaches want or ms have passed; returns whether it did. */
static bool run_until(const int *count, int want, long long ms)
{
    return tp_run_count(base, count, want, ms);
}

/* Runs the loop for ms, whatever happens. */
static void run_for(long long ms)
{
    tp_run_for(base, ms);
}

/* What one lookup heard: how often done was called, the last answer and when. */
struct ans {
    int calls;
    enum verify_answer a;
    long long at_ms;
};

static int answered;                /* done calls in the running test */

static void on_done(enum verify_answer a, void *arg)
{
    struct ans *r = arg;
    r->calls++;
    r->a = a;
    r->at_ms = clock_mono_ms();
    answered++;
}

/* One lookup of mailbox, run to its answer (the test fails past guard_ms); done must come once. */
static enum verify_answer ask(struct verify_source *vs, const char *mailbox, long long guard_ms)
{
    struct smtp_path p = { .mailbox = (char *)mailbox };
    struct ans r = { 0 };
    vs->lookup(vs, &p, on_done, &r);
    if (!run_until(&r.calls, 1, guard_ms))
        fail_msg("no answer for %s within %lld ms", mailbox, guard_ms);
    run_for(20);
    assert_int_equal(r.calls, 1);
    return r.a;
}

static struct verify_source *wa_new(const char *url, const char *token, long long timeout_ms)
{
    struct buf err = BUF_INIT;
    struct verify_source *vs = verify_webadmin_new(base, url, token, timeout_ms, &err);
    if (vs == NULL)
        fail_msg("verify_webadmin_new(%s): %s", url, buf_cstr(&err));
    buf_release(&err);
    return vs;
}

/* ---- servers --------------------------------------------------------------------------------- */

static struct http_py py = { -1, 0 };   /* the group's http.server */

static void py_start(struct http_py *s)
{
    char out[128];
    snprintf(out, sizeof out, "%s/http.log", tmpdir);
    http_py_start(s, wwwdir, out);
}

static char *py_url(const struct http_py *s, const char *scheme, const char *suffix)
{
    static char url[128];
    snprintf(url, sizeof url, "%s://127.0.0.1:%d%s", scheme, s->port, suffix);
    return url;
}

static void peer_start(struct http_peer *pe, const char *reply, bool close_after)
{
    http_peer_start(pe, base, reply, close_after);
}

static char *peer_url(const struct http_peer *pe, const char *suffix)
{
    static char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", pe->port, suffix);
    return url;
}

/* Creates wwwdir/rel: a directory when rel ends in '/', else an empty file (parents made). */
static void www_make(const char *rel)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", wwwdir, rel);
    for (char *c = path + strlen(wwwdir) + 1; *c != '\0'; c++) {
        if (*c == '/') {
            *c = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST)
                fail_msg("mkdir %s: %s", path, strerror(errno));
            *c = '/';
        }
    }
    if (path[strlen(path) - 1] != '/') {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        close(fd);
    }
}

/* Stops the servers (http_server.c kills any left), removes the directory, releases libcurl. */
static void cleanup_at_exit(void)
{
    http_py_stop(&py);
    tp_cleanup(NULL, tmpdir);
    curl_global_cleanup();
}

/* ---- group ----------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    log_init("test", LOG_CRIT, 2);
    strcpy(tmpdir, "/tmp/mxg-webadmin-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    atexit(cleanup_at_exit);
    snprintf(wwwdir, sizeof wwwdir, "%s/www", tmpdir);
    assert_int_equal(mkdir(wwwdir, 0755), 0);
    www_make("users/bob@example.test");
    www_make("users/dir@example.test/");
    www_make("prefix/users/carol@example.test");
    for (int i = 0; i < 15; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "users/u%d@example.test", i);
        www_make(rel);
    }
    base = event_base_new();
    assert_non_null(base);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    http_py_stop(&py);
    event_base_free(base);
    base = NULL;
    return 0;
}

/* Starts the group's http.server on first use; skips when Python is not installed. */
static void need_py(void)
{
    if (!http_py_available())
        skip();
    if (py.pid <= 0)
        py_start(&py);
}

/* ---- construction ---------------------------------------------------------------------------- */

static void test_bad_settings(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *token;
        long long timeout_ms;
        const char *err;
    } cases[] = {
        { NULL, "", 1000, "webadmin url is empty" },
        { "", "", 1000, "webadmin url is empty" },
        { "ftp://127.0.0.1/", "", 1000, "webadmin url must start with http:// or https://" },
        { "127.0.0.1:8000", "", 1000, "webadmin url must start with http:// or https://" },
        { "http:/127.0.0.1", "", 1000, "webadmin url must start with http:// or https://" },
        { "http://", "", 1000, "webadmin url is not a valid URL: No host part in the URL" },
        { "http://:8000/", "", 1000, "webadmin url is not a valid URL: No host part in the URL" },
        { "http://127.0.0.1:99999", "", 1000,
          "webadmin url is not a valid URL: Port number was not a decimal number between 0 and 65535" },
        { "https://[::1/", "", 1000, "webadmin url is not a valid URL: Bad IPv6 address" },
        { "http://127.0.0.1/x?y=1", "", 1000, "webadmin url must not have a query or a fragment" },
        { "http://127.0.0.1/#top", "", 1000, "webadmin url must not have a query or a fragment" },
        { "http://james host/", "", 1000, "webadmin url must not contain spaces or control characters" },
        { "http://james\r\nhost/", "", 1000, "webadmin url must not contain spaces or control characters" },
        { "http://127.0.0.1:8000", "tok\r\nX-Injected: 1", 1000,
          "webadmin token must not contain control characters" },
        { "http://127.0.0.1:8000", "tok\tx", 1000, "webadmin token must not contain control characters" },
        { "http://127.0.0.1:8000", "", 0, "webadmin timeout must be positive" },
        { "http://127.0.0.1:8000", "", -5, "webadmin timeout must be positive" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf err = BUF_INIT;
        buf_puts(&err, "stale text");
        struct verify_source *vs = verify_webadmin_new(base, cases[i].url, cases[i].token,
                                                       cases[i].timeout_ms, &err);
        if (vs != NULL)
            fail_msg("case %zu: %s accepted", i, cases[i].url ? cases[i].url : "(null)");
        assert_string_equal(buf_cstr(&err), cases[i].err);
        buf_release(&err);
    }
}

static void test_good_settings(void **state)
{
    (void)state;
    static const char *const urls[] = {
        "http://127.0.0.1:8000", "http://127.0.0.1:8000/", "HTTP://127.0.0.1:8000/james/",
        "https://james.example.test", "http://[::1]:8000/admin", "http://localhost",
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        struct buf err = BUF_INIT;
        struct verify_source *vs = verify_webadmin_new(base, urls[i], i % 2 ? "token" : NULL, 1000, &err);
        if (vs == NULL) {
            fail_msg("%s: %s", urls[i], buf_cstr(&err));
            return;
        }
        assert_string_equal(buf_cstr(&err), "");
        assert_string_equal(vs->name, "webadmin");
        assert_true(vs->cacheable);
        vs->free(vs);
        buf_release(&err);
    }
}

/* The null path has no mailbox: no user, answered at once without a request. */
static void test_no_mailbox(void **state)
{
    (void)state;
    struct http_peer pe;
    peer_start(&pe, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    struct verify_source *vs = wa_new(peer_url(&pe, ""), "", 1000);
    struct smtp_path p = { .null = true, .mailbox = (char *)"" };
    struct ans r = { 0 };
    vs->lookup(vs, &p, on_done, &r);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.a, VERIFY_DUNNO);
    run_for(50);
    assert_int_equal(pe.conns, 0);
    vs->free(vs);
    http_peer_stop(&pe);
}

/* ---- against http.server --------------------------------------------------------------------- */

static void test_python_answers(void **state)
{
    (void)state;
    need_py();
    static const struct {
        const char *suffix;         /* after http://127.0.0.1:port */
        const char *mailbox;
        enum verify_answer want;
    } cases[] = {
        { "", "bob@example.test", VERIFY_EXISTS },
        { "/", "bob@example.test", VERIFY_EXISTS },
        { "", "nobody@example.test", VERIFY_DUNNO },
        { "", "BOB@example.test", VERIFY_DUNNO },
        { "/prefix", "carol@example.test", VERIFY_EXISTS },
        { "/prefix/", "carol@example.test", VERIFY_EXISTS },
        { "/prefix", "bob@example.test", VERIFY_DUNNO },
        { "", "carol@example.test", VERIFY_DUNNO },
        { "/missing-prefix", "bob@example.test", VERIFY_DUNNO },
        /* a directory: http.server answers 301 to add the slash; not followed, not an answer */
        { "", "dir@example.test", VERIFY_TEMPFAIL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct verify_source *vs = wa_new(py_url(&py, "http", cases[i].suffix), "", 2000);
        enum verify_answer a = ask(vs, cases[i].mailbox, 3000);
        if (a != cases[i].want)
            fail_msg("case %zu (%s%s): %s, want %s", i, cases[i].suffix, cases[i].mailbox,
                     verify_answer_name(a), verify_answer_name(cases[i].want));
        vs->free(vs);
    }
}

/* https:// to a plain HTTP server: the handshake fails. */
static void test_tls_failure(void **state)
{
    (void)state;
    need_py();
    struct verify_source *vs = wa_new(py_url(&py, "https", ""), "", 2000);
    assert_int_equal(ask(vs, "bob@example.test", 3000), VERIFY_TEMPFAIL);
    vs->free(vs);
}

static void test_server_stopped(void **state)
{
    (void)state;
    need_py();
    struct http_py s = { -1, 0 };
    py_start(&s);
    struct verify_source *vs = wa_new(py_url(&s, "http", ""), "", 2000);
    assert_int_equal(ask(vs, "bob@example.test", 3000), VERIFY_EXISTS);
    http_py_stop(&s);
    long long t0 = clock_mono_ms();
    assert_int_equal(ask(vs, "bob@example.test", 3000), VERIFY_TEMPFAIL);
    assert_true(clock_mono_ms() - t0 < 1000);      /* refused at once, not the timeout */
    vs->free(vs);
}

static void test_parallel(void **state)
{
    (void)state;
    need_py();
    enum { N = 30 };
    struct verify_source *vs = wa_new(py_url(&py, "http", ""), "", 10000);
    char mailbox[N][64];
    struct smtp_path p[N];
    struct ans r[N];
    memset(r, 0, sizeof r);
    answered = 0;
    for (int i = 0; i < N; i++) {
        /* even: u0..u14, which exist; odd: m0..m14, which do not */
        snprintf(mailbox[i], sizeof mailbox[i], "%c%d@example.test", i % 2 ? 'm' : 'u', i / 2);
        p[i] = (struct smtp_path){ .mailbox = mailbox[i] };
        vs->lookup(vs, &p[i], on_done, &r[i]);
    }
    assert_int_equal(answered, 0);      /* nothing is answered before the loop runs */
    assert_true(run_until(&answered, N, 15000));
    run_for(20);
    assert_int_equal(answered, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        if (r[i].a != (i % 2 ? VERIFY_DUNNO : VERIFY_EXISTS))
            fail_msg("%s: %s", mailbox[i], verify_answer_name(r[i].a));
    }
    vs->free(vs);
}

/* ---- against the in-process peer ------------------------------------------------------------- */

static void test_status_mapping(void **state)
{
    (void)state;
    static const struct {
        const char *reply;
        bool close_after;
        enum verify_answer want;
    } cases[] = {
        { "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, VERIFY_EXISTS },
        { "HTTP/1.1 204 No Content\r\n\r\n", false, VERIFY_EXISTS },
        { "HTTP/1.0 200 OK\r\n\r\n", true, VERIFY_EXISTS },
        { "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false, VERIFY_DUNNO },
        /* a HEAD reply announces a body it does not send */
        { "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n", false, VERIFY_DUNNO },
        { "HTTP/1.1 301 Moved Permanently\r\nLocation: /users/other\r\nContent-Length: 0\r\n\r\n", false,
          VERIFY_TEMPFAIL },
        { "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n", false,
          VERIFY_TEMPFAIL },
        { "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", false, VERIFY_TEMPFAIL },
        { "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", false, VERIFY_TEMPFAIL },
        { "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", false, VERIFY_TEMPFAIL },
        { "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", false, VERIFY_TEMPFAIL },
        { "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n", false, VERIFY_TEMPFAIL },
        { "HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n", false, VERIFY_TEMPFAIL },
        { "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", false, VERIFY_TEMPFAIL },
        { "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", false, VERIFY_TEMPFAIL },
        /* not HTTP at all, a cut status line, and a close without a byte */
        { "220 mx.example.test ESMTP\r\n", true, VERIFY_TEMPFAIL },
        { "HTTP/1.1 200", true, VERIFY_TEMPFAIL },
        { "", true, VERIFY_TEMPFAIL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct http_peer pe;
        peer_start(&pe, cases[i].reply, cases[i].close_after);
        struct verify_source *vs = wa_new(peer_url(&pe, ""), "", 2000);
        enum verify_answer a = ask(vs, "bob@example.test", 3000);
        if (a != cases[i].want)
            fail_msg("case %zu: %s, want %s", i, verify_answer_name(a), verify_answer_name(cases[i].want));
        run_for(30);
        assert_int_equal(pe.requests, 1);       /* redirects are not followed, nothing retried */
        vs->free(vs);
        http_peer_stop(&pe);
    }
}

static void test_request_bytes(void **state)
{
    (void)state;
    static const struct {
        const char *suffix;
        const char *mailbox;
        const char *line;           /* the request line the peer must read */
    } cases[] = {
        { "", "bob@example.test", "HEAD /users/bob%40example.test HTTP/1.1\r\n" },
        { "/", "bob@example.test", "HEAD /users/bob%40example.test HTTP/1.1\r\n" },
        { "/james", "bob@example.test", "HEAD /james/users/bob%40example.test HTTP/1.1\r\n" },
        { "/james/", "bob@example.test", "HEAD /james/users/bob%40example.test HTTP/1.1\r\n" },
        { "", "a/b@example.test", "HEAD /users/a%2Fb%40example.test HTTP/1.1\r\n" },
        { "", "../admin@example.test", "HEAD /users/..%2Fadmin%40example.test HTTP/1.1\r\n" },
        { "", "\"a b\"@example.test", "HEAD /users/%22a%20b%22%40example.test HTTP/1.1\r\n" },
        { "", "x%y?z#w+v@example.test", "HEAD /users/x%25y%3Fz%23w%2Bv%40example.test HTTP/1.1\r\n" },
        { "", "first.last-x_y~z@example.test", "HEAD /users/first.last-x_y~z%40example.test HTTP/1.1\r\n" },
        { "", "p\xc3\xa9@example.test", "HEAD /users/p%C3%A9%40example.test HTTP/1.1\r\n" },
        { "", "bob@[127.0.0.1]", "HEAD /users/bob%40%5B127.0.0.1%5D HTTP/1.1\r\n" },
    };
    struct http_peer pe;
    peer_start(&pe, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct verify_source *vs = wa_new(peer_url(&pe, cases[i].suffix), "", 2000);
        assert_int_equal(ask(vs, cases[i].mailbox, 3000), VERIFY_EXISTS);
        const char *head = buf_cstr(&pe.head);
        if (strncmp(head, cases[i].line, strlen(cases[i].line)) != 0)
            fail_msg("case %zu: request was %s", i, head);
        assert_null(strcasestr(head, "\r\nAuthorization:"));
        assert_null(strcasestr(head, "\r\nContent-Length:"));
        vs->free(vs);
    }
    http_peer_stop(&pe);
}

static void test_bearer_token(void **state)
{
    (void)state;
    static const struct {
        const char *token;
        const char *header;         /* NULL: no Authorization header at all */
    } cases[] = {
        { "s3cr.et-TOKEN_42", "\r\nAuthorization: Bearer s3cr.et-TOKEN_42\r\n" },
        { "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln",
          "\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln\r\n" },
        { "", NULL },
        { NULL, NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct http_peer pe;
        peer_start(&pe, "HTTP/1.1 204 No Content\r\n\r\n", false);
        struct verify_source *vs = wa_new(peer_url(&pe, ""), cases[i].token, 2000);
        assert_int_equal(ask(vs, "bob@example.test", 3000), VERIFY_EXISTS);
        assert_int_equal(pe.requests, 1);
        const char *head = buf_cstr(&pe.head);
        if (cases[i].header != NULL) {
            if (strstr(head, cases[i].header) == NULL)
                fail_msg("case %zu: no %s in %s", i, cases[i].header + 2, head);
            assert_ptr_equal(strcasestr(head, "\r\nAuthorization:"), strstr(head, cases[i].header));
        } else {
            assert_null(strcasestr(head, "\r\nAuthorization:"));
        }
        vs->free(vs);
        http_peer_stop(&pe);
    }
}

/* One multi handle per source: its connection cache serves the next lookups. */
static void test_connection_reused(void **state)
{
    (void)state;
    struct http_peer pe;
    peer_start(&pe, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false);
    struct verify_source *vs = wa_new(peer_url(&pe, ""), "", 2000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ask(vs, "nobody@example.test", 3000), VERIFY_DUNNO);
    assert_int_equal(pe.requests, 3);
    assert_int_equal(pe.conns, 1);
    vs->free(vs);
    http_peer_stop(&pe);
}

/* Runs one lookup against a silent server and checks it ends TEMPFAIL at its timeout. */
static void check_timeout(const char *url)
{
    const long long timeout = 300;
    struct verify_source *vs = wa_new(url, "", timeout);
    struct smtp_path p = { .mailbox = (char *)"bob@example.test" };
    struct ans r = { 0 };
    long long t0 = clock_mono_ms();
    vs->lookup(vs, &p, on_done, &r);
    assert_true(run_until(&r.calls, 1, 5 * timeout));
    assert_int_equal(r.a, VERIFY_TEMPFAIL);
    long long elapsed = r.at_ms - t0;
    if (elapsed < timeout || elapsed >= 5 * timeout)
        fail_msg("answered after %lld ms, timeout %lld ms", elapsed, timeout);
    run_for(20);
    assert_int_equal(r.calls, 1);
    vs->free(vs);
}

static void test_timeout_silent(void **state)
{
    (void)state;
    struct http_peer pe;
    peer_start(&pe, NULL, false);       /* accepts, reads the request, never answers */
    check_timeout(peer_url(&pe, ""));
    assert_int_equal(pe.conns, 1);
    assert_int_equal(pe.requests, 1);
    http_peer_stop(&pe);
}

static void test_timeout_never_accepted(void **state)
{
    (void)state;
    /* the kernel completes the handshake into the backlog; nobody ever accepts */
    int port;
    int fd = tp_tcp_listen(16, 0, &port);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    check_timeout(url);
    close(fd);
}

/* free() answers what is pending TEMPFAIL from inside free, once each, and nothing after. */
static void test_free_pending(void **state)
{
    (void)state;
    struct http_peer pe;
    peer_start(&pe, NULL, false);
    for (int run_first = 0; run_first < 2; run_first++) {
        enum { N = 5 };
        struct verify_source *vs = wa_new(peer_url(&pe, ""), "", 5000);
        struct smtp_path p = { .mailbox = (char *)"bob@example.test" };
        struct ans r[N];
        memset(r, 0, sizeof r);
        answered = 0;
        for (int i = 0; i < N; i++)
            vs->lookup(vs, &p, on_done, &r[i]);
        if (run_first) {
            int before = pe.requests;
            assert_true(run_until(&pe.requests, before + N, 3000));     /* all N are on the wire */
        }
        assert_int_equal(answered, 0);
        vs->free(vs);
        assert_int_equal(answered, N);
        for (int i = 0; i < N; i++) {
            assert_int_equal(r[i].calls, 1);
            assert_int_equal(r[i].a, VERIFY_TEMPFAIL);
        }
        run_for(50);
        assert_int_equal(answered, N);
    }
    http_peer_stop(&pe);
}

/* An owner that frees the source from a done callback, with other lookups still pending. */
struct free_in_done {
    struct verify_source *vs;
    int calls;
    enum verify_answer first;
    int tempfails;
};

static void free_on_first(enum verify_answer a, void *arg)
{
    struct free_in_done *f = arg;
    if (f->calls++ == 0) {
        f->first = a;
        f->vs->free(f->vs);
    } else if (a == VERIFY_TEMPFAIL) {
        f->tempfails++;
    }
}

static void test_free_inside_done(void **state)
{
    (void)state;
    struct http_peer pe;
    peer_start(&pe, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    struct free_in_done f = { 0 };
    f.vs = wa_new(peer_url(&pe, ""), "", 2000);
    struct smtp_path p = { .mailbox = (char *)"bob@example.test" };
    for (int i = 0; i < 4; i++)
        f.vs->lookup(f.vs, &p, free_on_first, &f);
    assert_true(run_until(&f.calls, 4, 3000));
    run_for(50);
    assert_int_equal(f.calls, 4);
    assert_int_equal(f.first, VERIFY_EXISTS);
    assert_int_equal(f.tempfails, 3);
    http_peer_stop(&pe);
}

/* An owner that starts the next lookup from a done callback. */
struct chain {
    struct verify_source *vs;
    struct smtp_path p;
    int calls;
    enum verify_answer a[3];
};

static void chain_next(enum verify_answer a, void *arg)
{
    struct chain *c = arg;
    c->a[c->calls++] = a;
    if (c->calls < 3)
        c->vs->lookup(c->vs, &c->p, chain_next, c);
}

static void test_lookup_inside_done(void **state)
{
    (void)state;
    struct http_peer pe;
    peer_start(&pe, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    struct chain c = { .p = { .mailbox = (char *)"bob@example.test" } };
    c.vs = wa_new(peer_url(&pe, ""), "", 2000);
    c.vs->lookup(c.vs, &c.p, chain_next, &c);
    assert_true(run_until(&c.calls, 3, 3000));
    run_for(20);
    assert_int_equal(c.calls, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c.a[i], VERIFY_EXISTS);
    assert_int_equal(pe.requests, 3);
    c.vs->free(c.vs);
    http_peer_stop(&pe);
}

/* Failures are logged with the status or curl's error; the address goes through log_str. */
static void test_failure_logged(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/log.jsonl", tmpdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    log_init("test", LOG_WARN, fd);

    struct http_peer pe;
    peer_start(&pe, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", false);
    struct verify_source *vs = wa_new(peer_url(&pe, ""), "", 2000);
    assert_int_equal(ask(vs, "\"a\\\"b\"@example.test", 3000), VERIFY_TEMPFAIL);
    vs->free(vs);
    int port = pe.port;
    http_peer_stop(&pe);
    vs = wa_new(peer_url(&pe, ""), "", 2000);    /* the same port, now closed */
    assert_int_equal(ask(vs, "bob@example.test", 3000), VERIFY_TEMPFAIL);
    vs->free(vs);
    log_init("test", LOG_CRIT, 2);

    char text[4096];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    assert_true(n > 0);
    text[n] = '\0';
    char *second = strchr(text, '\n');
    assert_non_null(second);
    *second++ = '\0';
    char want[128];
    snprintf(want, sizeof want, "\"peer_ip\":\"127.0.0.1\",\"peer_port\":%d,\"ms\":", port);
    assert_non_null(strstr(text, "\"event\":\"verify_webadmin_failed\""));
    assert_non_null(strstr(text, "\"rcpt\":\"\\\"a\\\\\\\"b\\\"@example.test\",\"status\":503,"));
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(second, "\"event\":\"verify_webadmin_failed\""));
    assert_non_null(strstr(second, "\"rcpt\":\"bob@example.test\","
                                   "\"error\":\"Couldn't connect to server\","));
    assert_null(strstr(second, "\"status\""));
    assert_non_null(strchr(second, '\n'));
    assert_null(strchr(strchr(second, '\n') + 1, '\n'));     /* exactly two lines */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_settings),
        cmocka_unit_test(test_good_settings),
        cmocka_unit_test(test_no_mailbox),
        cmocka_unit_test(test_python_answers),
        cmocka_unit_test(test_tls_failure),
        cmocka_unit_test(test_server_stopped),
        cmocka_unit_test(test_parallel),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_request_bytes),
        cmocka_unit_test(test_bearer_token),
        cmocka_unit_test(test_connection_reused),
        cmocka_unit_test(test_timeout_silent),
        cmocka_unit_test(test_timeout_never_accepted),
        cmocka_unit_test(test_free_pending),
        cmocka_unit_test(test_free_inside_done),
        cmocka_unit_test(test_lookup_inside_done),
        cmocka_unit_test(test_failure_logged),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
