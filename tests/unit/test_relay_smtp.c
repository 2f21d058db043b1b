/*
 * test_relay_smtp.c - the outbound SMTP client (relay/relay_smtp.c) and client TLS contexts
 * (lib/tls_client.c): reply parsing and dot-stuffing by table; whole transactions against real
 * smtp-sink processes (postfix package) started on free loopback ports with their fault options
 * (reject, 421, disconnect, delay, no ESMTP/PIPELINING/8BITMIME/DSN), checking results and dump
 * files; and against a small in-process responder for what smtp-sink cannot do: STARTTLS (may,
 * encrypt, verify), exact wire bytes, SIZE, SMTPUTF8, replies that were not asked for, malformed
 * replies, one rejected recipient among several, RSET before reuse.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "buf.h"
#include "log.h"
#include "relay_smtp.h"
#include "tls.h"
#include "tls_client.h"

#define SINK "/usr/sbin/smtp-sink"
#define DELIVERED RELAY_SMTP_DELIVERED
#define DEFERRED RELAY_SMTP_DEFERRED
#define FAILED RELAY_SMTP_FAILED
#define MAX_SINKS 64

static char tmpdir[64];
static char cert_file[128], key_file[128];
static pid_t sink_pids[MAX_SINKS];
static int nsinks;

/* ---------- pure functions ---------- */

static void test_stuff_table(void **state)
{
    (void)state;
    static const struct { const char *in, *want; } cases[] = {
        { "", ".\r\n" },
        { "a", "a\r\n.\r\n" },
        { "a\r\n", "a\r\n.\r\n" },
        { "a\nb\n", "a\r\nb\r\n.\r\n" },
        { "a\rb\r", "a\r\nb\r\n.\r\n" },
        { "a\r\r\nb", "a\r\n\r\nb\r\n.\r\n" },
        { "a\n\rb", "a\r\n\r\nb\r\n.\r\n" },
        { ".\r\n", "..\r\n.\r\n" },
        { ".a\r\n..b\r\nc.d\r\n", "..a\r\n...b\r\nc.d\r\n.\r\n" },
        { "x\n.\n", "x\r\n..\r\n.\r\n" },
        { "x\r.y", "x\r\n..y\r\n.\r\n" },
        { "\r\n\r\n", "\r\n\r\n.\r\n" },
        { "h: \xc3\xa9\r\n", "h: \xc3\xa9\r\n.\r\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].in);
        /* every split into two pieces gives the same bytes as one piece */
        for (size_t cut = 0; cut <= n; cut++) {
            struct relay_stuffer st;
            struct buf out = BUF_INIT;
            relay_stuff_init(&st);
            relay_stuff(&st, cases[i].in, cut, &out);
            relay_stuff(&st, cases[i].in + cut, n - cut, &out);
            relay_stuff_end(&st, &out);
            if (strcmp(buf_cstr(&out), cases[i].want) != 0)
                fail_msg("case %zu cut %zu: got \"%s\"", i, cut, buf_cstr(&out));
            buf_release(&out);
        }
    }
}

static void test_reply_table(void **state)
{
    (void)state;
    static const struct {
        const char *lines[4];
        enum relay_reply_feed want;     /* after the last line */
        int code;
        const char *status, *text, *why;
    } cases[] = {
        { { "250 ok" }, RELAY_REPLY_DONE, 250, "2.0.0", "ok", NULL },
        { { "250" }, RELAY_REPLY_DONE, 250, "2.0.0", "", NULL },
        { { "250-a", "250-b", "250 c" }, RELAY_REPLY_DONE, 250, "2.0.0", "a b c", NULL },
        { { "250-a" }, RELAY_REPLY_MORE, 250, "2.0.0", "a", NULL },
        { { "550 5.1.1 <x@y>: unknown" }, RELAY_REPLY_DONE, 550, "5.1.1", "<x@y>: unknown", NULL },
        { { "550-5.7.1 first", "550 5.7.1 second" }, RELAY_REPLY_DONE, 550, "5.7.1", "first second", NULL },
        { { "451 4.3.0" }, RELAY_REPLY_DONE, 451, "4.3.0", "", NULL },
        { { "421 4.4.2 bye" }, RELAY_REPLY_DONE, 421, "4.4.2", "bye", NULL },
        { { "550 4.1.1 class mismatch" }, RELAY_REPLY_DONE, 550, "5.0.0", "4.1.1 class mismatch", NULL },
        { { "550 5.1234.1 too long" }, RELAY_REPLY_DONE, 550, "5.0.0", "5.1234.1 too long", NULL },
        { { "250 2.1.0Ok" }, RELAY_REPLY_DONE, 250, "2.0.0", "2.1.0Ok", NULL },
        { { "250 a\tb \x01" }, RELAY_REPLY_DONE, 250, "2.0.0", "a\\x09b \\x01", NULL },
        { { "250-a", "251 b" }, RELAY_REPLY_BAD, 0, NULL, NULL, "reply code 251 after 250 in one reply" },
        { { "25" }, RELAY_REPLY_BAD, 0, NULL, NULL, "malformed reply code" },
        { { "2x0 ok" }, RELAY_REPLY_BAD, 0, NULL, NULL, "malformed reply code" },
        { { "150 ok" }, RELAY_REPLY_BAD, 0, NULL, NULL, "malformed reply code" },
        { { "260 ok" }, RELAY_REPLY_BAD, 0, NULL, NULL, "malformed reply code" },
        { { "250_ok" }, RELAY_REPLY_BAD, 0, NULL, NULL, "malformed reply separator" },
        { { "250 a\rb" }, RELAY_REPLY_BAD, 0, NULL, NULL, "NUL, CR or LF inside a reply line" },
        { { "250 a\nb" }, RELAY_REPLY_BAD, 0, NULL, NULL, "NUL, CR or LF inside a reply line" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct relay_reply r = { 0 };
        struct buf why = BUF_INIT;
        enum relay_reply_feed got = RELAY_REPLY_MORE;
        for (size_t l = 0; l < 4 && cases[i].lines[l] != NULL && got == RELAY_REPLY_MORE; l++)
            got = relay_reply_feed(&r, cases[i].lines[l], strlen(cases[i].lines[l]), &why);
        if (got != cases[i].want)
            fail_msg("case %zu: got %d (%s)", i, got, buf_cstr(&why));
        if (got == RELAY_REPLY_BAD) {
            assert_string_equal(buf_cstr(&why), cases[i].why);
        } else {
            char st[16];
            struct buf text = BUF_INIT;
            assert_int_equal(r.code, cases[i].code);
            relay_reply_status(&r, st, &text);
            assert_string_equal(st, cases[i].status);
            assert_string_equal(buf_cstr(&text), cases[i].text);
            buf_release(&text);
        }
        relay_reply_release(&r);
        buf_release(&why);
    }

    /* bounds: 512 bytes with CRLF pass, 513 do not; at most 100 lines */
    char line[600];
    memset(line, 'x', sizeof line);
    memcpy(line, "250 ", 4);
    struct relay_reply r = { 0 };
    struct buf why = BUF_INIT;
    assert_int_equal(relay_reply_feed(&r, line, 510, &why), RELAY_REPLY_DONE);
    relay_reply_reset(&r);
    assert_int_equal(relay_reply_feed(&r, line, 511, &why), RELAY_REPLY_BAD);
    assert_string_equal(buf_cstr(&why), "reply line longer than 512 bytes");
    relay_reply_reset(&r);
    buf_reset(&why);
    for (int l = 0; l < 100; l++)
        assert_int_equal(relay_reply_feed(&r, "250-x", 5, &why), RELAY_REPLY_MORE);
    assert_int_equal(relay_reply_feed(&r, "250 x", 5, &why), RELAY_REPLY_BAD);
    assert_string_equal(buf_cstr(&why), "reply longer than 100 lines or 16384 bytes");
    relay_reply_release(&r);
    buf_release(&why);
}

static void test_policy_names(void **state)
{
    (void)state;
    static const char *const names[] = { "none", "may", "encrypt", "verify" };
    for (int i = 0; i < 4; i++) {
        enum tls_policy p;
        assert_true(tls_policy_parse(names[i], &p));
        assert_int_equal(p, i);
        assert_string_equal(tls_policy_name(p), names[i]);
    }
    enum tls_policy p;
    assert_false(tls_policy_parse("dane", &p));
    assert_false(tls_policy_parse("MAY", &p));
    struct buf err = BUF_INIT;
    SSL_CTX *ctx = tls_client_ctx_new(NULL, NULL, &err);
    assert_non_null(ctx);
    assert_null(tls_client_ssl_new(ctx, TLS_POLICY_VERIFY, NULL, &err));
    assert_string_equal(buf_cstr(&err), "TLS policy verify needs the server's host name");
    SSL *ssl = tls_client_ssl_new(ctx, TLS_POLICY_VERIFY, "mx.remote.test.", &err);
    assert_non_null(ssl);
    assert_string_equal(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "mx.remote.test");
    assert_int_equal(SSL_get_verify_mode(ssl), SSL_VERIFY_PEER);
    SSL_free(ssl);
    ssl = tls_client_ssl_new(ctx, TLS_POLICY_ENCRYPT, "192.0.2.1", &err);
    assert_non_null(ssl);
    assert_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));     /* no SNI for an IP */
    assert_int_equal(SSL_get_verify_mode(ssl), SSL_VERIFY_NONE);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    buf_reset(&err);
    assert_null(tls_client_ctx_new("/nonexistent/ca.pem", NULL, &err));
    assert_int_equal(strncmp(buf_cstr(&err), "cannot load trusted certificates from /nonexistent/ca.pem: ", 59), 0);
    buf_release(&err);
}

/* ---------- helpers: ports, files, smtp-sink ---------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sin;
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static struct netaddr loopback(int port)
{
    struct netaddr a = { .len = sizeof(struct sockaddr_in) };
    struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct buf b = BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, n);
    fclose(f);
    return buf_steal(&b);
}

struct sink {
    int port;
    pid_t pid;
    char dir[128];      /* dump directory */
    char out[128];      /* stdout: the -c counters */
};

/* Starts smtp-sink with the given options (NULL-terminated) and waits until it accepts. */
static void sink_start(struct sink *s, ...)
{
    static int seq;
    const char *argv[40];
    int n = 0;
    char dump[200], listen[64];
    s->port = free_port();
    snprintf(s->dir, sizeof s->dir, "%s/sink%d", tmpdir, ++seq);
    snprintf(s->out, sizeof s->out, "%s/sink%d.out", tmpdir, seq);
    assert_int_equal(mkdir(s->dir, 0755), 0);
    argv[n++] = SINK;
    if (geteuid() == 0) {   /* smtp-sink drops root privileges only to a named user */
        struct passwd *pw = getpwnam("postfix");
        assert_non_null(pw);
        assert_int_equal(chown(s->dir, pw->pw_uid, pw->pw_gid), 0);
        argv[n++] = "-u";
        argv[n++] = "postfix";
    }
    snprintf(dump, sizeof dump, "%s/%%M.", s->dir);
    argv[n++] = "-c";
    argv[n++] = "-d";
    argv[n++] = dump;
    va_list ap;
    va_start(ap, s);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 34;)
        argv[n++] = a;
    va_end(ap);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", s->port);
    argv[n++] = listen;
    argv[n++] = "16";
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(s->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(SINK, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    assert_true(nsinks < MAX_SINKS);
    sink_pids[nsinks++] = pid;
    for (int i = 0; i < 200; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct netaddr a = loopback(s->port);
        int r = connect(fd, (struct sockaddr *)&a.ss, a.len);
        close(fd);
        if (r == 0)
            return;
        usleep(10000);
    }
    fail_msg("smtp-sink on port %d did not start", s->port);
}

static void sink_stop(struct sink *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        for (int i = 0; i < nsinks; i++)
            if (sink_pids[i] == s->pid)
                sink_pids[i] = 0;
        s->pid = 0;
    }
}

/*
 * The last "sess=N quit=N mesg=N" line of -c, waiting up to a second for sess to reach want.
 * sink_start's readiness probe counts as one session (no QUIT, no message).
 */
static void sink_counters(struct sink *s, int want, int *sess, int *quit, int *mesg)
{
    *sess = *quit = *mesg = -1;
    for (int i = 0; i < 100; i++) {
        char *t = slurp(s->out);
        char *last = NULL;
        for (char *p = t; p != NULL && (p = strstr(p, "sess=")) != NULL; p++)
            last = p;
        if (last != NULL)
            sscanf(last, "sess=%d quit=%d mesg=%d", sess, quit, mesg);
        free(t);
        if (*sess >= want)
            return;
        usleep(10000);
    }
}

/* The concatenated dump files of s (usually one), waiting up to a second for want of them. */
static char *sink_dump(struct sink *s, int want)
{
    for (int tries = 0; tries < 100; tries++) {
        DIR *d = opendir(s->dir);
        assert_non_null(d);
        struct buf all = BUF_INIT;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[400];
            snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
            char *t = slurp(path);
            buf_puts(&all, t != NULL ? t : "");
            free(t);
            n++;
        }
        closedir(d);
        if (n >= want)
            return buf_steal(&all);
        buf_release(&all);
        usleep(10000);
    }
    fail_msg("smtp-sink wrote fewer than %d dump files", want);
    return NULL;
}

/* The value of header line "name: " in a dump, or "" (static buffer). */
static const char *dump_field(const char *dump, const char *name, int nth)
{
    static char val[1024];
    size_t nl = strlen(name);
    val[0] = '\0';
    for (const char *p = dump; *p; ) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':' && nth-- == 0) {
            const char *e = strchr(p, '\n');
            snprintf(val, sizeof val, "%.*s", (int)(e - p - nl - 2), p + nl + 2);
            return val;
        }
        const char *e = strchr(p, '\n');
        if (e == NULL)
            break;
        p = e + 1;
    }
    return val;
}

/* The message as dumped: what follows smtp-sink's three-line Received header. */
static const char *dump_message(const char *dump)
{
    const char *p = strstr(dump, "\nReceived: ");
    assert_non_null(p);
    for (int i = 0; i < 3; i++)
        p = strchr(p + 1, '\n');
    return p + 1;
}

/* ---------- helpers: running the client ---------- */

struct run {
    struct event_base *base;
    struct relay_smtp *c;
    int done, closed;
    struct relay_smtp_result res[8];
    char text[8][1100];
    size_t n;
    bool tls, tls_fallback, dsn, reused;
    char peer[NETADDR_STRLEN];
    const struct relay_smtp_job *next;      /* sent from within the done callback */
    bool free_in_done;
    bool guard_fired;
    const char *want_host;                  /* NULL: "mx.remote.test" */
};

static void done_cb(struct relay_smtp *c, const struct relay_smtp_report *rep, void *arg)
{
    struct run *r = arg;
    r->done++;
    r->n = rep->nrcpts;
    for (size_t i = 0; i < rep->nrcpts && i < 8; i++) {
        r->res[i] = rep->results[i];
        snprintf(r->text[i], sizeof r->text[i], "%s", rep->results[i].text);
        r->res[i].text = r->text[i];
        assert_string_equal(rep->results[i].mx_host, r->want_host != NULL ? r->want_host : "mx.remote.test");
    }
    r->tls = rep->tls;
    r->tls_fallback = rep->tls_fallback;
    r->dsn = rep->dsn;
    r->reused = rep->reused;
    snprintf(r->peer, sizeof r->peer, "%s", rep->peer);
    if (r->next != NULL) {
        const struct relay_smtp_job *j = r->next;
        r->next = NULL;
        assert_true(relay_smtp_send(c, j, done_cb, r));
    }
    if (r->free_in_done) {
        relay_smtp_free(c);
        r->c = NULL;
    }
}

static void closed_cb(struct relay_smtp *c, void *arg)
{
    struct run *r = arg;
    assert_ptr_equal(c, r->c);
    r->closed++;
}

static void guard_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct run *r = arg;
    r->guard_fired = true;
    event_base_loopbreak(r->base);
}

/* Runs the loop until done reaches ndone (and closed fired when want_closed), 8 s at most. */
static void run_until(struct run *r, int ndone, bool want_closed)
{
    struct event *guard = evtimer_new(r->base, guard_cb, r);
    struct timeval tv = { 8, 0 };
    evtimer_add(guard, &tv);
    while (!r->guard_fired && (r->done < ndone || (want_closed && r->closed == 0)))
        event_base_loop(r->base, EVLOOP_ONCE);
    event_free(guard);
    if (r->guard_fired)
        fail_msg("loop guard fired: done=%d closed=%d", r->done, r->closed);
}

static struct relay_smtp_conf base_conf(void)
{
    struct relay_smtp_conf conf = { .helo_name = "relay.test", .mx_host = "mx.remote.test",
                                    .tls = TLS_POLICY_MAY, .idle_ms = 200 };
    relay_smtp_timeouts_default(&conf.timeouts);
    unsigned *t = &conf.timeouts.connect_ms;
    for (size_t i = 0; i < sizeof conf.timeouts / sizeof *t; i++)
        t[i] = 3000;    /* a hung test fails in seconds, not minutes */
    return conf;
}

static const struct relay_smtp_rcpt rcpts3[] = {
    { "one@remote.test", DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY, "rfc822;one+x@remote.test" },
    { "two@remote.test", DSN_NOTIFY_NEVER, NULL },
    { "three@remote.test", 0, NULL },
};

static const char body_in[] =
    "From: <s@src.test>\r\nSubject: t\r\n\r\nline one\r\n.leading dot\r\n.\r\n..two\r\nbare\nlf\r\n"
    "bare\rcr\r\n8bit: \xc3\xa9\r\nno final line end";
/* the same as smtp-sink dumps it: unstuffed, one LF per line end, plus its closing empty line */
static const char body_dumped[] =
    "From: <s@src.test>\nSubject: t\n\nline one\n.leading dot\n.\n..two\nbare\nlf\n"
    "bare\ncr\n8bit: \xc3\xa9\nno final line end\n\n";
/* the same as it must appear on the wire */
static const char body_wire[] =
    "From: <s@src.test>\r\nSubject: t\r\n\r\nline one\r\n..leading dot\r\n..\r\n...two\r\nbare\r\nlf\r\n"
    "bare\r\ncr\r\n8bit: \xc3\xa9\r\nno final line end\r\n.\r\n";

static struct relay_smtp_job job3(void)
{
    return (struct relay_smtp_job){ .sender = "s@src.test", .envid = "id+1=x", .ret = DSN_RET_HDRS,
                                    .body = body_in, .body_len = sizeof body_in - 1, .rcpts = rcpts3,
                                    .nrcpts = 3 };
}

/* Sends job to one address with conf and runs it to its done callback. */
static void run_job(struct run *r, const struct relay_smtp_conf *conf, const struct netaddr *addrs, size_t n,
                    const struct relay_smtp_job *job, bool want_closed)
{
    memset(r, 0, sizeof *r);
    r->base = event_base_new();
    r->c = relay_smtp_new(r->base, conf, addrs, n, closed_cb, r);
    assert_true(relay_smtp_send(r->c, job, done_cb, r));
    assert_int_equal(r->done, 0);       /* never from inside the start call */
    run_until(r, 1, want_closed);
}

static void run_free(struct run *r)
{
    relay_smtp_free(r->c);
    event_base_free(r->base);
}

static void expect_all(const struct run *r, enum relay_smtp_outcome o, int code, const char *status,
                       enum relay_phase ph, const char *text)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->res[i].outcome != o || r->res[i].code != code || strcmp(r->res[i].status, status) != 0
            || r->res[i].phase != ph || (text != NULL && strstr(r->res[i].text, text) == NULL))
            fail_msg("rcpt %zu: outcome %d code %d status %s phase %s text \"%s\"", i, r->res[i].outcome,
                     r->res[i].code, r->res[i].status, relay_phase_name(r->res[i].phase), r->res[i].text);
    }
}

/* ---------- tests against smtp-sink ---------- */

static void test_sink_deliver(void **state)
{
    (void)state;
    struct sink s;
    sink_start(&s, NULL);
    struct relay_smtp_conf conf = base_conf();
    struct netaddr a = loopback(s.port);
    struct relay_smtp_job job = job3();
    struct run r;
    run_job(&r, &conf, &a, 1, &job, true);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    assert_true(r.dsn);
    assert_false(r.tls);    /* may: smtp-sink offers no STARTTLS */
    assert_false(r.reused);
    char peer[32];
    snprintf(peer, sizeof peer, "127.0.0.1:%d", s.port);
    assert_string_equal(r.peer, peer);
    assert_int_equal(r.closed, 1);      /* idle 200 ms, then QUIT */
    run_free(&r);

    char *d = sink_dump(&s, 1);
    assert_string_equal(dump_message(d), body_dumped);
    assert_null(strchr(d, '\r'));
    assert_string_equal(dump_field(d, "X-Client-Proto", 0), "ESMTP");
    assert_string_equal(dump_field(d, "X-Helo-Args", 0), "relay.test");
    assert_string_equal(dump_field(d, "X-Mail-Args", 0), "<s@src.test> BODY=8BITMIME RET=HDRS ENVID=id+2B1+3Dx");
    assert_string_equal(dump_field(d, "X-Rcpt-Args", 0),
                        "<one@remote.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;one+2Bx@remote.test");
    assert_string_equal(dump_field(d, "X-Rcpt-Args", 1), "<two@remote.test> NOTIFY=NEVER");
    assert_string_equal(dump_field(d, "X-Rcpt-Args", 2), "<three@remote.test>");
    free(d);
    int sess, quit, mesg;
    sink_counters(&s, 2, &sess, &quit, &mesg);
    assert_int_equal(sess, 2);
    assert_int_equal(quit, 1);
    assert_int_equal(mesg, 1);
    sink_stop(&s);
}

/* Without 8BITMIME and DSN the parameters are left out; the 8-bit body still goes out as it is. */
static void test_sink_plain_extensions(void **state)
{
    (void)state;
    static const struct { const char *opt1, *opt2, *proto, *mail, *rcpt0; } cases[] = {
        { "-8", "-N", "ESMTP", "<s@src.test>", "<one@remote.test>" },
        { "-e", NULL, "SMTP", "<s@src.test>", "<one@remote.test>" },            /* HELO fallback */
        { "-f", "EHLO", "SMTP", "<s@src.test>", "<one@remote.test>" },          /* EHLO rejected */
        { "-p", NULL, "ESMTP", "<s@src.test> BODY=8BITMIME RET=HDRS ENVID=id+2B1+3Dx",
          "<one@remote.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;one+2Bx@remote.test" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sink s;
        sink_start(&s, cases[i].opt1, cases[i].opt2, NULL);
        struct relay_smtp_conf conf = base_conf();
        struct netaddr a = loopback(s.port);
        struct relay_smtp_job job = job3();
        struct run r;
        run_job(&r, &conf, &a, 1, &job, false);
        expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
        run_free(&r);
        char *d = sink_dump(&s, 1);
        assert_string_equal(dump_message(d), body_dumped);
        assert_string_equal(dump_field(d, "X-Client-Proto", 0), cases[i].proto);
        assert_string_equal(dump_field(d, "X-Mail-Args", 0), cases[i].mail);
        assert_string_equal(dump_field(d, "X-Rcpt-Args", 0), cases[i].rcpt0);
        free(d);
        sink_stop(&s);
    }
}

struct fault_case {
    const char *opt1, *arg1, *opt2;
    bool shrink;                /* reply timeouts of 500 ms */
    enum relay_smtp_outcome outcome;
    int code;
    const char *status;
    enum relay_phase phase;
    const char *text;
};

static const struct fault_case fault_cases[] = {
    { "-f", "RCPT", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_RCPT, "Error: command failed" },
    { "-r", "RCPT", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_RCPT, "Error: command failed" },
    { "-f", "MAIL", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_MAIL, "Error: command failed" },
    { "-r", "MAIL", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_MAIL, "Error: command failed" },
    { "-f", "DATA", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_DATA, "Error: command failed" },
    { "-r", "DATA", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_DATA, "Error: command failed" },
    { "-f", ".", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_BODY, "Error: command failed" },
    { "-r", ".", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_BODY, "Error: command failed" },
    { "-f", "CONNECT", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_GREETING, "Error: command failed" },
    { "-r", "EHLO", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_EHLO, "Error: command failed" },
    { "-f", "HELO", "-e", false, FAILED, 500, "5.3.0", RELAY_PHASE_HELO, "Error: command failed" },
    { "-Q", "CONNECT", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_GREETING, "Server closing connection" },
    { "-Q", "EHLO", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_EHLO, "Server closing connection" },
    { "-Q", "MAIL", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_MAIL, "Server closing connection" },
    { "-Q", "RCPT", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_RCPT, "Server closing connection" },
    { "-Q", ".", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_BODY, "Server closing connection" },
    { "-q", "CONNECT", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_GREETING,
      "lost connection with mx.remote.test[127.0.0.1] while receiving the initial server greeting" },
    { "-q", "EHLO", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_EHLO,
      "lost connection with mx.remote.test[127.0.0.1] while performing the EHLO handshake" },
    { "-q", "RCPT", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_RCPT,
      "lost connection with mx.remote.test[127.0.0.1] while sending RCPT TO" },
    { "-q", "DATA", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_DATA,
      "lost connection with mx.remote.test[127.0.0.1] while sending the DATA command" },
    { "-q", ".", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_BODY,
      "lost connection with mx.remote.test[127.0.0.1] while waiting for the reply to the end of data" },
    { "-w", "2", "-p", true, DEFERRED, 0, "4.4.2", RELAY_PHASE_DATA,
      "conversation with mx.remote.test[127.0.0.1] timed out while sending the DATA command" },
    { "-W", "CONNECT:2", NULL, true, DEFERRED, 0, "4.4.2", RELAY_PHASE_GREETING,
      "conversation with mx.remote.test[127.0.0.1] timed out while receiving the initial server greeting" },
    { "-W", "EHLO:2", NULL, true, DEFERRED, 0, "4.4.2", RELAY_PHASE_EHLO, "timed out while performing the EHLO" },
    { "-W", "MAIL:2", "-p", true, DEFERRED, 0, "4.4.2", RELAY_PHASE_MAIL, "timed out while sending MAIL FROM" },
    { "-W", "RCPT:2", "-p", true, DEFERRED, 0, "4.4.2", RELAY_PHASE_RCPT, "timed out while sending RCPT TO" },
    { "-W", ".:2", NULL, true, DEFERRED, 0, "4.4.2", RELAY_PHASE_BODY,
      "timed out while waiting for the reply to the end of data" },
};

static void test_sink_faults(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof fault_cases / sizeof fault_cases[0]; i++) {
        const struct fault_case *fc = &fault_cases[i];
        struct sink s;
        sink_start(&s, fc->opt1, fc->arg1, fc->opt2, NULL);
        struct relay_smtp_conf conf = base_conf();
        if (fc->shrink) {
            conf.timeouts.greeting_ms = conf.timeouts.helo_ms = conf.timeouts.mail_ms = 500;
            conf.timeouts.rcpt_ms = conf.timeouts.data_init_ms = conf.timeouts.data_done_ms = 500;
        }
        struct netaddr a = loopback(s.port);
        struct relay_smtp_job job = job3();
        struct run r;
        run_job(&r, &conf, &a, 1, &job, false);
        if (r.n != 3)
            fail_msg("case %zu: %zu results", i, r.n);
        for (size_t k = 0; k < 3; k++) {
            const struct relay_smtp_result *x = &r.res[k];
            if (x->outcome != fc->outcome || x->code != fc->code || strcmp(x->status, fc->status) != 0
                || x->phase != fc->phase || strstr(x->text, fc->text) == NULL)
                fail_msg("case %zu (%s %s) rcpt %zu: outcome %d code %d status %s phase %s text \"%s\"", i,
                         fc->opt1, fc->arg1, k, x->outcome, x->code, x->status, relay_phase_name(x->phase), x->text);
        }
        run_free(&r);
        sink_stop(&s);
    }
}

/* One connection, two transactions (the second sent from the first's done callback), one QUIT. */
static void test_sink_reuse(void **state)
{
    (void)state;
    struct sink s;
    sink_start(&s, NULL);
    struct relay_smtp_conf conf = base_conf();
    struct netaddr a = loopback(s.port);
    struct relay_smtp_job job = job3(), job2 = job3();
    job2.sender = "";
    job2.nrcpts = 1;
    struct run r;
    memset(&r, 0, sizeof r);
    r.base = event_base_new();
    r.c = relay_smtp_new(r.base, &conf, &a, 1, closed_cb, &r);
    r.next = &job2;
    assert_true(relay_smtp_send(r.c, &job, done_cb, &r));
    assert_false(relay_smtp_send(r.c, &job2, done_cb, &r));    /* busy */
    run_until(&r, 2, true);
    assert_int_equal(r.n, 1);
    assert_true(r.reused);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    assert_int_equal(relay_smtp_transactions(r.c), 2);
    assert_int_equal(r.closed, 1);
    assert_false(relay_smtp_ready(r.c));
    assert_false(relay_smtp_send(r.c, &job, done_cb, &r));     /* closed */
    run_free(&r);
    int sess, quit, mesg;
    sink_counters(&s, 2, &sess, &quit, &mesg);
    assert_int_equal(sess, 2);
    assert_int_equal(quit, 1);
    assert_int_equal(mesg, 2);
    char *d = sink_dump(&s, 2);
    assert_non_null(strstr(d, "X-Mail-Args: <> BODY=8BITMIME RET=HDRS ENVID=id+2B1+3Dx\n"));
    free(d);
    sink_stop(&s);
}

/* UTF-8 addresses to a server without SMTPUTF8: 5.6.7 for those recipients, or all for the sender. */
static void test_sink_smtputf8(void **state)
{
    (void)state;
    struct sink s;
    sink_start(&s, NULL);
    struct relay_smtp_conf conf = base_conf();
    struct netaddr a = loopback(s.port);
    static const struct relay_smtp_rcpt rc[] = {
        { "one@remote.test", 0, NULL }, { "j\xc3\xb6rg@remote.test", 0, NULL }, { "three@remote.test", 0, NULL },
    };
    struct relay_smtp_job job = job3();
    job.rcpts = rc;
    struct run r;
    run_job(&r, &conf, &a, 1, &job, true);
    assert_int_equal(r.res[0].outcome, DELIVERED);
    assert_int_equal(r.res[2].outcome, DELIVERED);
    assert_int_equal(r.res[1].outcome, FAILED);
    assert_int_equal(r.res[1].code, 0);
    assert_string_equal(r.res[1].status, "5.6.7");
    assert_int_equal(r.res[1].phase, RELAY_PHASE_RCPT);
    assert_string_equal(r.res[1].text, "SMTPUTF8 is required, but was not offered by host mx.remote.test[127.0.0.1]");
    run_free(&r);
    char *d = sink_dump(&s, 1);
    assert_string_equal(dump_field(d, "X-Rcpt-Args", 1), "<three@remote.test>");
    assert_string_equal(dump_field(d, "X-Rcpt-Args", 2), "");
    free(d);

    job.sender = "s\xc3\xa9@src.test";
    run_job(&r, &conf, &a, 1, &job, true);
    expect_all(&r, FAILED, 0, "5.6.7", RELAY_PHASE_MAIL, "SMTPUTF8 is required");
    run_free(&r);
    job.sender = "s@src.test";
    job.smtputf8 = true;    /* UTF-8 headers */
    run_job(&r, &conf, &a, 1, &job, true);
    expect_all(&r, FAILED, 0, "5.6.7", RELAY_PHASE_MAIL, "SMTPUTF8 is required");
    run_free(&r);
    int sess, quit, mesg;
    sink_counters(&s, 4, &sess, &quit, &mesg);
    assert_int_equal(sess, 4);
    assert_int_equal(quit, 3);
    assert_int_equal(mesg, 1);      /* nothing more was sent */
    sink_stop(&s);
}

static void test_connect_failures(void **state)
{
    (void)state;
    struct relay_smtp_conf conf = base_conf();
    struct relay_smtp_job job = job3();
    int port = free_port();
    struct netaddr a = loopback(port);
    struct run r;
    run_job(&r, &conf, &a, 1, &job, true);
    char want[128];
    snprintf(want, sizeof want, "connect to mx.remote.test[127.0.0.1]:%d: Connection refused", port);
    expect_all(&r, DEFERRED, 0, "4.4.1", RELAY_PHASE_CONNECT, NULL);
    assert_string_equal(r.res[0].text, want);
    run_free(&r);

    /* refused, then a working address */
    struct sink s;
    sink_start(&s, NULL);
    struct netaddr two[2] = { loopback(port), loopback(s.port) };
    run_job(&r, &conf, two, 2, &job, false);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    char peer[32];
    snprintf(peer, sizeof peer, "127.0.0.1:%d", s.port);
    assert_string_equal(r.peer, peer);
    run_free(&r);
    sink_stop(&s);

    /* a listener whose backlog is full never completes the handshake: connect timeout */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct netaddr la = loopback(free_port());
    assert_int_equal(bind(lfd, (struct sockaddr *)&la.ss, la.len), 0);
    assert_int_equal(listen(lfd, 0), 0);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void)connect(fill[i], (struct sockaddr *)&la.ss, la.len);
    }
    conf.timeouts.connect_ms = 300;
    run_job(&r, &conf, &la, 1, &job, true);
    expect_all(&r, DEFERRED, 0, "4.4.1", RELAY_PHASE_CONNECT, "Connection timed out");
    run_free(&r);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}

/* relay_smtp_quit ends an idle connection at once; a failing greeting moves on to the next address. */
static void test_quit_and_greeting_fallback(void **state)
{
    (void)state;
    struct sink s, bad;
    sink_start(&s, NULL);
    sink_start(&bad, "-Q", "CONNECT", NULL);
    struct relay_smtp_conf conf = base_conf();
    conf.idle_ms = 60000;
    struct netaddr two[2] = { loopback(bad.port), loopback(s.port) };
    struct relay_smtp_job job = job3();
    struct run r;
    run_job(&r, &conf, two, 2, &job, false);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    assert_true(relay_smtp_ready(r.c));
    assert_int_equal(r.closed, 0);
    assert_true(relay_smtp_quit(r.c));
    assert_false(relay_smtp_quit(r.c));
    assert_int_equal(r.closed, 0);      /* never from inside the call */
    run_until(&r, 1, true);
    assert_false(relay_smtp_ready(r.c));
    run_free(&r);
    int sess, quit, mesg;
    sink_counters(&s, 2, &sess, &quit, &mesg);
    assert_int_equal(sess, 2);
    assert_int_equal(quit, 1);
    assert_int_equal(mesg, 1);
    sink_stop(&s);
    sink_stop(&bad);
}

/* relay_smtp_free inside the done callback, and with a job in hand (no callback follows). */
static void test_free_paths(void **state)
{
    (void)state;
    struct sink s;
    sink_start(&s, "-w", "1", NULL);
    struct relay_smtp_conf conf = base_conf();
    struct netaddr a = loopback(s.port);
    struct relay_smtp_job job = job3();
    struct run r;
    memset(&r, 0, sizeof r);
    r.base = event_base_new();
    r.c = relay_smtp_new(r.base, &conf, &a, 1, closed_cb, &r);
    assert_true(relay_smtp_send(r.c, &job, done_cb, &r));
    for (int i = 0; i < 20; i++)    /* well into the conversation: DATA is being delayed */
        event_base_loop(r.base, EVLOOP_NONBLOCK);
    usleep(100000);
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    relay_smtp_free(r.c);
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    assert_int_equal(r.done, 0);
    assert_int_equal(r.closed, 0);
    event_base_free(r.base);
    sink_stop(&s);

    sink_start(&s, NULL);
    a = loopback(s.port);
    memset(&r, 0, sizeof r);
    r.base = event_base_new();
    r.c = relay_smtp_new(r.base, &conf, &a, 1, closed_cb, &r);
    r.free_in_done = true;
    assert_true(relay_smtp_send(r.c, &job, done_cb, &r));
    run_until(&r, 1, false);
    assert_null(r.c);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    assert_int_equal(r.closed, 0);
    event_base_free(r.base);
    relay_smtp_free(NULL);
    sink_stop(&s);
}

/* ---------- an in-process responder for what smtp-sink cannot do ---------- */

/* How the responder answers STARTTLS: not offered, a handshake, plaintext instead of a handshake,
 * a 220 with a reply behind it, a 454 refusal, a 220 and then silence. */
enum rsp_tls { RSP_TLS_OFF, RSP_TLS_OK, RSP_TLS_BROKEN, RSP_TLS_INJECT, RSP_TLS_REFUSE, RSP_TLS_STALL };

struct rsp {
    struct event_base *base;
    struct evconnlistener *lst;
    int port;
    /* replies, CRLFs included; NULL = the default */
    const char *greeting;       /* "" = never greet */
    const char *ehlo;
    const char *mail_reply;
    const char *rcpt_reject;    /* RCPT lines containing this get 550 5.1.1 */
    const char *data_reply;
    const char *dot_reply;
    enum rsp_tls tls;
    SSL_CTX *ctx;
    /* state */
    struct bufferevent *bev;
    bool in_data, broken_wait, closing, stalled;
    int rcpt_ok;                /* RCPTs accepted in this transaction */
    /* what was seen */
    struct buf cmds;            /* command lines, each ended by '\n'; "<TLS>\n" where TLS started */
    struct buf data;            /* raw bytes after 354, final dot included */
    int conns, ehlos, pending_at_mail;
    bool eof;
};

static void rsp_say(struct rsp *r, const char *s)
{
    bufferevent_write(r->bev, s, strlen(s));
}

static void rsp_close(struct rsp *r)
{
    if (r->bev != NULL)
        bufferevent_free(r->bev);
    r->bev = NULL;
    r->eof = true;
}

static void rsp_read(struct bufferevent *bev, void *arg);

static void rsp_write(struct bufferevent *bev, void *arg)
{
    struct rsp *r = arg;
    if (r->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        rsp_close(r);
}

static void rsp_event(struct bufferevent *bev, short what, void *arg)
{
    struct rsp *r = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        buf_puts(&r->cmds, "<TLS>\n");
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        rsp_close(r);
}

/* Lines still waiting in the input: how many commands the client wrote in the same burst. */
static int count_lines(struct evbuffer *in)
{
    int n = 0;
    struct evbuffer_ptr p = evbuffer_search(in, "\r\n", 2, NULL);
    while (p.pos >= 0) {
        n++;
        evbuffer_ptr_set(in, &p, 2, EVBUFFER_PTR_ADD);
        p = evbuffer_search(in, "\r\n", 2, &p);
    }
    return n;
}

static void rsp_command(struct rsp *r, const char *line)
{
    struct evbuffer *in = bufferevent_get_input(r->bev);
    buf_printf(&r->cmds, "%s\n", line);
    if (strncmp(line, "EHLO ", 5) == 0) {
        r->ehlos++;
        rsp_say(r, r->ehlo != NULL ? r->ehlo
                    : r->tls != RSP_TLS_OFF && r->ehlos == 1
                        ? "250-resp.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
                        : "250-resp.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    } else if (strncmp(line, "HELO ", 5) == 0) {
        rsp_say(r, "250 resp.test\r\n");
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == RSP_TLS_OK) {
        rsp_say(r, "220 2.0.0 Ready to start TLS\r\n");
        SSL *ssl = SSL_new(r->ctx);
        struct bufferevent *f = bufferevent_openssl_filter_new(r->base, r->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                               BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        assert_non_null(f);
        bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
        r->bev = f;
        bufferevent_setcb(f, rsp_read, rsp_write, rsp_event, r);
        bufferevent_enable(f, EV_READ | EV_WRITE);
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == RSP_TLS_BROKEN) {
        rsp_say(r, "220 2.0.0 Ready to start TLS\r\n");
        r->broken_wait = true;
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == RSP_TLS_INJECT) {
        rsp_say(r, "220 2.0.0 Ready to start TLS\r\n250 injected\r\n");
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == RSP_TLS_REFUSE) {
        rsp_say(r, "454 4.7.0 TLS not available due to local problem\r\n");
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == RSP_TLS_STALL) {
        rsp_say(r, "220 2.0.0 Ready to start TLS\r\n");
        r->stalled = true;
    } else if (strncmp(line, "MAIL FROM:", 10) == 0) {
        r->pending_at_mail = count_lines(in);
        r->rcpt_ok = 0;
        rsp_say(r, r->mail_reply != NULL ? r->mail_reply : "250 2.1.0 Ok\r\n");
    } else if (strncmp(line, "RCPT TO:", 8) == 0) {
        if (r->rcpt_reject != NULL && strstr(line, r->rcpt_reject) != NULL)
            rsp_say(r, "550-5.1.1 <rejected>: Recipient address rejected:\r\n550 5.1.1 User unknown\r\n");
        else
            rsp_say(r, "250 2.1.5 Ok\r\n");
        r->rcpt_ok += r->rcpt_reject == NULL || strstr(line, r->rcpt_reject) == NULL;
    } else if (strcmp(line, "DATA") == 0) {
        const char *rep = r->data_reply != NULL ? r->data_reply
                          : r->rcpt_ok > 0 ? "354 End data with <CR><LF>.<CR><LF>\r\n"
                                           : "554 5.5.1 Error: no valid recipients\r\n";
        rsp_say(r, rep);
        r->in_data = strncmp(rep, "354", 3) == 0;
        buf_reset(&r->data);
    } else if (strcmp(line, "RSET") == 0) {
        rsp_say(r, "250 2.0.0 Ok\r\n");
    } else if (strcmp(line, "QUIT") == 0) {
        rsp_say(r, "221 2.0.0 Bye\r\n");
        r->closing = true;
    } else {
        rsp_say(r, "502 5.5.2 Error: command not recognized\r\n");
    }
}

static void rsp_read(struct bufferevent *bev, void *arg)
{
    struct rsp *r = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (r->stalled) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (r->broken_wait) {   /* the ClientHello gets plaintext back */
        evbuffer_drain(in, evbuffer_get_length(in));
        rsp_say(r, "this is not TLS\r\n");
        r->broken_wait = false;
        r->closing = true;
        return;
    }
    while (r->bev != NULL && !r->closing) {
        if (r->in_data) {
            size_t n = evbuffer_get_length(in);
            if (n == 0)
                return;
            size_t old = r->data.len;
            buf_reserve(&r->data, n);
            evbuffer_remove(in, r->data.data + old, n);
            r->data.len += n;
            r->data.data[r->data.len] = '\0';
            /* stuffing means "\r\n.\r\n" can only be the end */
            if ((r->data.len >= 5 && memcmp(r->data.data + r->data.len - 5, "\r\n.\r\n", 5) == 0)
                || strcmp(buf_cstr(&r->data), ".\r\n") == 0) {
                r->in_data = false;
                rsp_say(r, r->dot_reply != NULL ? r->dot_reply : "250 2.0.0 Ok: queued as X\r\n");
            }
            return;
        }
        size_t len;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT);
        if (line == NULL)
            return;
        struct bufferevent *before = r->bev;
        rsp_command(r, line);
        free(line);
        if (r->bev != before)
            return;     /* TLS from here on: the filter reads */
    }
}

static void rsp_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct rsp *r = arg;
    (void)l;
    (void)sa;
    (void)len;
    r->conns++;
    assert_null(r->bev);    /* one connection at a time */
    r->bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    r->in_data = r->broken_wait = r->closing = r->stalled = false;
    bufferevent_setcb(r->bev, rsp_read, rsp_write, rsp_event, r);
    bufferevent_enable(r->bev, EV_READ | EV_WRITE);
    rsp_say(r, r->greeting != NULL ? r->greeting : "220 resp.test ESMTP\r\n");
}

static void rsp_start(struct rsp *r, struct event_base *base)
{
    r->base = base;
    struct netaddr a = loopback(0);
    r->lst = evconnlistener_new_bind(base, rsp_accept, r, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 8,
                                     (struct sockaddr *)&a.ss, (int)a.len);
    assert_non_null(r->lst);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    assert_int_equal(getsockname(evconnlistener_get_fd(r->lst), (struct sockaddr *)&sin, &sl), 0);
    r->port = ntohs(sin.sin_port);
    if (r->tls != RSP_TLS_OFF && r->ctx == NULL) {
        struct buf err = BUF_INIT;
        if (!tls_self_signed(cert_file, key_file, "mx.remote.test", &err))
            fail_msg("tls_self_signed: %s", buf_cstr(&err));
        r->ctx = tls_server_ctx_new(cert_file, key_file, &err);
        assert_non_null(r->ctx);
        buf_release(&err);
    }
}

static void rsp_stop(struct rsp *r)
{
    rsp_close(r);
    evconnlistener_free(r->lst);
    SSL_CTX_free(r->ctx);
    buf_release(&r->cmds);
    buf_release(&r->data);
}

/* Runs job against a responder set up by the caller (rsp fields filled), to done and close. */
static void rsp_run(struct run *r, struct rsp *rsp, struct relay_smtp_conf *conf, const struct relay_smtp_job *job)
{
    memset(r, 0, sizeof *r);
    r->base = event_base_new();
    rsp_start(rsp, r->base);
    struct netaddr a = loopback(rsp->port);
    r->c = relay_smtp_new(r->base, conf, &a, 1, closed_cb, r);
    assert_true(relay_smtp_send(r->c, job, done_cb, r));
    run_until(r, 1, true);
    for (int i = 0; i < 20 && !rsp->eof; i++)   /* let the responder see the end */
        event_base_loop(r->base, EVLOOP_NONBLOCK);
}

static void rsp_finish(struct run *r, struct rsp *rsp)
{
    rsp_stop(rsp);
    run_free(r);
}

/* The exact wire bytes: MAIL, RCPTs and DATA in one burst; the body stuffed, CRLF only. */
static void test_rsp_pipelining_wire(void **state)
{
    (void)state;
    for (int pipelining = 1; pipelining >= 0; pipelining--) {
        struct rsp rsp = { .ehlo = pipelining ? "250-resp.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME\r\n"
                                              : "250-resp.test\r\n250-SIZE 100000\r\n250 8BITMIME\r\n" };
        struct relay_smtp_conf conf = base_conf();
        struct relay_smtp_job job = job3();
        struct run r;
        rsp_run(&r, &rsp, &conf, &job);
        expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok: queued as X");
        assert_false(r.dsn);
        assert_int_equal(rsp.pending_at_mail, pipelining ? 4 : 0);
        char want[512];
        snprintf(want, sizeof want,
                 "EHLO relay.test\nMAIL FROM:<s@src.test> SIZE=%zu BODY=8BITMIME\nRCPT TO:<one@remote.test>\n"
                 "RCPT TO:<two@remote.test>\nRCPT TO:<three@remote.test>\nDATA\nQUIT\n", sizeof body_in - 1);
        assert_string_equal(buf_cstr(&rsp.cmds), want);
        assert_int_equal(rsp.data.len, sizeof body_wire - 1);
        assert_memory_equal(rsp.data.data, body_wire, sizeof body_wire - 1);
        for (size_t i = 0; i < rsp.data.len; i++) {
            if (rsp.data.data[i] == '\r')
                assert_int_equal(rsp.data.data[i + 1], '\n');
            if (rsp.data.data[i] == '\n')
                assert_int_equal(rsp.data.data[i - 1], '\r');
        }
        rsp_finish(&r, &rsp);
    }
}

/* A body far larger than the socket buffers goes out in pieces, intact. */
static void test_rsp_large_body(void **state)
{
    (void)state;
    struct buf big = BUF_INIT, wire = BUF_INIT;
    for (int i = 0; i < 40000; i++)
        buf_printf(&big, "%sline %d of a long message\n", i % 7 == 0 ? "." : "", i);
    struct relay_stuffer st;
    relay_stuff_init(&st);
    relay_stuff(&st, big.data, big.len, &wire);
    relay_stuff_end(&st, &wire);
    struct rsp rsp = { 0 };
    struct relay_smtp_conf conf = base_conf();
    struct relay_smtp_job job = job3();
    job.body = big.data;
    job.body_len = big.len;
    struct run r;
    rsp_run(&r, &rsp, &conf, &job);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, NULL);
    assert_int_equal(rsp.data.len, wire.len);
    assert_memory_equal(rsp.data.data, wire.data, wire.len);
    rsp_finish(&r, &rsp);
    buf_release(&big);
    buf_release(&wire);
}

/* One recipient rejected among three; a job whose every RCPT fails leaves a MAIL open, so RSET
 * comes before the next MAIL; DATA answered 354 with no recipient gets an empty message. */
static void test_rsp_rcpt_rejects(void **state)
{
    (void)state;
    struct rsp rsp = { .rcpt_reject = "two@" };
    struct relay_smtp_conf conf = base_conf();
    struct relay_smtp_job job = job3();
    static const struct relay_smtp_rcpt only_two[] = { { "two@remote.test", 0, NULL } };
    struct relay_smtp_job job2 = job3();
    job2.rcpts = only_two;
    job2.nrcpts = 1;
    struct relay_smtp_job job1 = job3();
    job1.nrcpts = 1;
    struct run r;
    memset(&r, 0, sizeof r);
    r.base = event_base_new();
    rsp_start(&rsp, r.base);
    struct netaddr a = loopback(rsp.port);
    r.c = relay_smtp_new(r.base, &conf, &a, 1, closed_cb, &r);
    assert_true(relay_smtp_send(r.c, &job, done_cb, &r));
    run_until(&r, 1, false);
    assert_int_equal(r.res[0].outcome, DELIVERED);
    assert_int_equal(r.res[2].outcome, DELIVERED);
    assert_int_equal(r.res[1].outcome, FAILED);
    assert_int_equal(r.res[1].code, 550);
    assert_string_equal(r.res[1].status, "5.1.1");
    assert_int_equal(r.res[1].phase, RELAY_PHASE_RCPT);
    assert_string_equal(r.res[1].text, "<rejected>: Recipient address rejected: User unknown");

    r.next = &job1;     /* sent from job2's done callback, while the RSET is outstanding */
    assert_true(relay_smtp_send(r.c, &job2, done_cb, &r));
    run_until(&r, 3, false);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");

    rsp.data_reply = "354 go ahead anyway\r\n";
    assert_true(relay_smtp_send(r.c, &job2, done_cb, &r));
    run_until(&r, 4, true);
    expect_all(&r, FAILED, 550, "5.1.1", RELAY_PHASE_RCPT, "User unknown");
    assert_string_equal(buf_cstr(&rsp.data), ".\r\n");
    for (int i = 0; i < 20 && !rsp.eof; i++)
        event_base_loop(r.base, EVLOOP_NONBLOCK);
    assert_int_equal(rsp.conns, 1);
    assert_string_equal(buf_cstr(&rsp.cmds),
                        "EHLO relay.test\nMAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<one@remote.test>\n"
                        "RCPT TO:<two@remote.test>\nRCPT TO:<three@remote.test>\nDATA\n"
                        "MAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<two@remote.test>\nDATA\nRSET\n"
                        "MAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<one@remote.test>\nDATA\n"
                        "MAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<two@remote.test>\nDATA\nQUIT\n");
    rsp_finish(&r, &rsp);
}

/* Replies not asked for, and malformed replies: 4.5.0, connection dropped without QUIT. */
static void test_rsp_protocol_errors(void **state)
{
    (void)state;
    char longline[700], many[1200];
    memset(longline, 'x', sizeof longline);
    memcpy(longline, "220 ", 4);
    strcpy(longline + 600, "\r\n");
    many[0] = '\0';
    for (int i = 0; i < 101; i++)
        strcat(many, "220-x\r\n");
    strcat(many, "220 x\r\n");
    static const char ehlo_nopipe[] = "250-resp.test\r\n250 8BITMIME\r\n";
    struct {
        struct rsp rsp;
        enum relay_phase phase;
        const char *text;
    } cases[] = {
        { { .ehlo = ehlo_nopipe, .mail_reply = "250 2.1.0 Ok\r\n250 2.1.0 Ok again\r\n" }, RELAY_PHASE_MAIL,
          "protocol error with mx.remote.test[127.0.0.1] in reply to MAIL FROM: reply that was not asked for" },
        { { .dot_reply = "250 2.0.0 Ok\r\n250 2.0.0 Ok again\r\n" }, RELAY_PHASE_BODY, "reply that was not asked for" },
        { { .data_reply = "354 go\r\n250 early\r\n" }, RELAY_PHASE_DATA, "reply that was not asked for" },
        { { .greeting = "220 hi\r\n220 hi again\r\n" }, RELAY_PHASE_GREETING, "reply that was not asked for" },
        { { .greeting = "220-a\r\n230 b\r\n" }, RELAY_PHASE_GREETING, "reply code 230 after 220 in one reply" },
        { { .greeting = "220 bare lf\n" }, RELAY_PHASE_GREETING, "reply line not ended by CRLF" },
        { { .greeting = longline }, RELAY_PHASE_GREETING, "reply line longer than 512 bytes" },
        { { .greeting = many }, RELAY_PHASE_GREETING, "reply longer than 100 lines" },
        { { .ehlo = "250-resp.test\r\n250 PIPELINING\r\n", .mail_reply = "354 what\r\n" }, RELAY_PHASE_MAIL,
          "intermediate reply to a command that takes none" },
        { { .data_reply = "250 not 354\r\n" }, RELAY_PHASE_DATA, "2xx reply to DATA" },
        { { .tls = RSP_TLS_INJECT }, RELAY_PHASE_STARTTLS, "reply that was not asked for" },
    };
    struct buf err = BUF_INIT;
    SSL_CTX *ctx = tls_client_ctx_new(NULL, NULL, &err);
    assert_non_null(ctx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct relay_smtp_conf conf = base_conf();
        conf.tls_ctx = ctx;
        struct relay_smtp_job job = job3();
        struct run r;
        rsp_run(&r, &cases[i].rsp, &conf, &job);
        for (size_t k = 0; k < 3; k++) {
            const struct relay_smtp_result *x = &r.res[k];
            if (x->outcome != DEFERRED || x->code != 0 || strcmp(x->status, "4.5.0") != 0
                || x->phase != cases[i].phase || strstr(x->text, cases[i].text) == NULL)
                fail_msg("case %zu rcpt %zu: outcome %d code %d status %s phase %s text \"%s\"", i, k, x->outcome,
                         x->code, x->status, relay_phase_name(x->phase), x->text);
        }
        assert_int_equal(r.closed, 1);
        assert_true(cases[i].rsp.eof);
        assert_null(strstr(buf_cstr(&cases[i].rsp.cmds), "QUIT"));
        rsp_finish(&r, &cases[i].rsp);
    }
    SSL_CTX_free(ctx);
}

/* SIZE over the server's limit: 5.3.4 without MAIL; SMTPUTF8 offered: the parameter goes out. */
static void test_rsp_size_utf8(void **state)
{
    (void)state;
    struct rsp rsp = { .ehlo = "250-resp.test\r\n250-SIZE 100\r\n250 PIPELINING\r\n" };
    struct relay_smtp_conf conf = base_conf();
    struct relay_smtp_job job = job3();
    struct run r;
    rsp_run(&r, &rsp, &conf, &job);
    char want[160];
    snprintf(want, sizeof want, "message size %zu exceeds size limit 100 of server mx.remote.test[127.0.0.1]",
             sizeof body_in - 1);
    expect_all(&r, FAILED, 0, "5.3.4", RELAY_PHASE_MAIL, want);
    assert_string_equal(buf_cstr(&rsp.cmds), "EHLO relay.test\nQUIT\n");
    rsp_finish(&r, &rsp);

    struct rsp rsp2 = { .ehlo = "250-resp.test\r\n250-SMTPUTF8\r\n250-DSN\r\n250 PIPELINING\r\n" };
    static const struct relay_smtp_rcpt rc[] = { { "j\xc3\xb6rg@remote.test", DSN_NOTIFY_SUCCESS, NULL } };
    job.rcpts = rc;
    job.nrcpts = 1;
    job.envid = NULL;
    job.ret = DSN_RET_FULL;
    rsp_run(&r, &rsp2, &conf, &job);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, NULL);
    assert_string_equal(buf_cstr(&rsp2.cmds), "EHLO relay.test\nMAIL FROM:<s@src.test> SMTPUTF8 RET=FULL\n"
                                              "RCPT TO:<j\xc3\xb6rg@remote.test> NOTIFY=SUCCESS\nDATA\nQUIT\n");
    rsp_finish(&r, &rsp2);
}

struct tls_case {
    enum rsp_tls mode;
    enum tls_policy policy;
    bool trust_cert;            /* the client trusts the responder's certificate */
    const char *mx_host;
    enum relay_smtp_outcome outcome;
    const char *status;
    enum relay_phase phase;
    const char *text;
    bool tls, fallback;
    const char *cmds;
};

static void test_rsp_starttls(void **state)
{
    (void)state;
    static const char *const tls_cmds = "EHLO relay.test\nSTARTTLS\n<TLS>\nEHLO relay.test\n"
                                        "MAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<one@remote.test>\n"
                                        "RCPT TO:<two@remote.test>\nRCPT TO:<three@remote.test>\nDATA\nQUIT\n";
    static const char *const plain_cmds = "EHLO relay.test\nMAIL FROM:<s@src.test> BODY=8BITMIME\n"
                                          "RCPT TO:<one@remote.test>\nRCPT TO:<two@remote.test>\n"
                                          "RCPT TO:<three@remote.test>\nDATA\nQUIT\n";
    static const struct tls_case cases[] = {
        { RSP_TLS_OK, TLS_POLICY_MAY, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          true, false, NULL },
        { RSP_TLS_OK, TLS_POLICY_ENCRYPT, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          true, false, NULL },
        { RSP_TLS_OK, TLS_POLICY_VERIFY, true, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          true, false, NULL },
        { RSP_TLS_OK, TLS_POLICY_NONE, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          false, false, NULL },
        { RSP_TLS_OK, TLS_POLICY_VERIFY, false, "mx.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "TLS with mx.remote.test[127.0.0.1] failed: certificate verify failed: self-signed certificate", false,
          false, "EHLO relay.test\nSTARTTLS\n" },
        { RSP_TLS_OK, TLS_POLICY_VERIFY, true, "other.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "certificate verify failed: hostname mismatch", false, false, "EHLO relay.test\nSTARTTLS\n" },
        { RSP_TLS_BROKEN, TLS_POLICY_MAY, false, "mx.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "TLS with mx.remote.test[127.0.0.1] failed: ", false, true, "EHLO relay.test\nSTARTTLS\n" },
        { RSP_TLS_BROKEN, TLS_POLICY_ENCRYPT, false, "mx.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "TLS with mx.remote.test[127.0.0.1] failed: ", false, false, "EHLO relay.test\nSTARTTLS\n" },
        { RSP_TLS_OFF, TLS_POLICY_ENCRYPT, false, "mx.remote.test", DEFERRED, "4.7.4", RELAY_PHASE_STARTTLS,
          "TLS is required, but was not offered by host mx.remote.test[127.0.0.1]", false, false,
          "EHLO relay.test\nQUIT\n" },
        { RSP_TLS_OFF, TLS_POLICY_VERIFY, true, "mx.remote.test", DEFERRED, "4.7.4", RELAY_PHASE_STARTTLS,
          "TLS is required, but was not offered", false, false, "EHLO relay.test\nQUIT\n" },
        { RSP_TLS_OFF, TLS_POLICY_MAY, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          false, false, NULL },
        { RSP_TLS_REFUSE, TLS_POLICY_MAY, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          false, false, "EHLO relay.test\nSTARTTLS\nMAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<one@remote.test>\n"
          "RCPT TO:<two@remote.test>\nRCPT TO:<three@remote.test>\nDATA\nQUIT\n" },
        { RSP_TLS_REFUSE, TLS_POLICY_ENCRYPT, false, "mx.remote.test", DEFERRED, "4.7.4", RELAY_PHASE_STARTTLS,
          "TLS is required, but host mx.remote.test[127.0.0.1] refused STARTTLS: 454 4.7.0 TLS not available due to "
          "local problem", false, false, "EHLO relay.test\nSTARTTLS\nQUIT\n" },
        { RSP_TLS_STALL, TLS_POLICY_MAY, false, "mx.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "TLS with mx.remote.test[127.0.0.1] failed: handshake timed out", false, true,
          "EHLO relay.test\nSTARTTLS\n" },
    };
    struct buf err = BUF_INIT;
    if (!tls_self_signed(cert_file, key_file, "mx.remote.test", &err))
        fail_msg("tls_self_signed: %s", buf_cstr(&err));
    SSL_CTX *system_ctx = tls_client_ctx_new(NULL, NULL, &err);
    SSL_CTX *pinned_ctx = tls_client_ctx_new(cert_file, NULL, &err);
    assert_non_null(system_ctx);
    assert_non_null(pinned_ctx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct tls_case *tc = &cases[i];
        struct rsp rsp = { .tls = tc->mode };
        struct relay_smtp_conf conf = base_conf();
        conf.tls = tc->policy;
        conf.mx_host = tc->mx_host;
        conf.tls_ctx = tc->trust_cert ? pinned_ctx : system_ctx;
        conf.timeouts.starttls_ms = 500;
        struct relay_smtp_job job = job3();
        struct run r;
        memset(&r, 0, sizeof r);
        r.want_host = tc->mx_host;
        r.base = event_base_new();
        rsp_start(&rsp, r.base);
        struct netaddr a = loopback(rsp.port);
        r.c = relay_smtp_new(r.base, &conf, &a, 1, closed_cb, &r);
        assert_true(relay_smtp_send(r.c, &job, done_cb, &r));
        run_until(&r, 1, true);
        for (int k = 0; k < 20 && !rsp.eof; k++)
            event_base_loop(r.base, EVLOOP_NONBLOCK);
        assert_true(rsp.eof);
        for (size_t k = 0; k < 3; k++) {
            const struct relay_smtp_result *x = &r.res[k];
            int want_code = tc->outcome == DELIVERED ? 250 : 0;
            if (x->outcome != tc->outcome || x->code != want_code || strcmp(x->status, tc->status) != 0
                || x->phase != tc->phase || strstr(x->text, tc->text) == NULL)
                fail_msg("case %zu rcpt %zu: outcome %d code %d status %s phase %s text \"%s\"", i, k, x->outcome,
                         x->code, x->status, relay_phase_name(x->phase), x->text);
        }
        if (r.tls != tc->tls || r.tls_fallback != tc->fallback)
            fail_msg("case %zu: tls %d fallback %d", i, r.tls, r.tls_fallback);
        const char *want = tc->cmds != NULL ? tc->cmds : tc->tls ? tls_cmds : plain_cmds;
        if (strcmp(buf_cstr(&rsp.cmds), want) != 0)
            fail_msg("case %zu: commands \"%s\"", i, buf_cstr(&rsp.cmds));
        if (tc->outcome == DELIVERED) {
            assert_int_equal(rsp.data.len, sizeof body_wire - 1);
            assert_memory_equal(rsp.data.data, body_wire, sizeof body_wire - 1);
        }
        if (tc->fallback) {     /* what the caller does next: plaintext on a new connection */
            relay_smtp_free(r.c);
            conf.tls = TLS_POLICY_NONE;
            r.c = relay_smtp_new(r.base, &conf, &a, 1, closed_cb, &r);
            rsp.tls = RSP_TLS_OFF;
            assert_true(relay_smtp_send(r.c, &job, done_cb, &r));
            run_until(&r, 2, false);
            expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
            assert_int_equal(rsp.conns, 2);
        }
        rsp_finish(&r, &rsp);
    }
    SSL_CTX_free(system_ctx);
    SSL_CTX_free(pinned_ctx);
    buf_release(&err);
}

/* Anything the server sends to an idle connection ends it (no QUIT); the results stand. */
static void test_rsp_idle_unsolicited(void **state)
{
    (void)state;
    struct rsp rsp = { 0 };
    struct relay_smtp_conf conf = base_conf();
    conf.idle_ms = 60000;
    struct relay_smtp_job job = job3();
    struct run r;
    memset(&r, 0, sizeof r);
    r.base = event_base_new();
    rsp_start(&rsp, r.base);
    struct netaddr a = loopback(rsp.port);
    r.c = relay_smtp_new(r.base, &conf, &a, 1, closed_cb, &r);
    assert_true(relay_smtp_send(r.c, &job, done_cb, &r));
    run_until(&r, 1, false);
    expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    assert_true(relay_smtp_ready(r.c));
    rsp_say(&rsp, "421 4.4.2 resp.test Error: timeout exceeded\r\n");
    run_until(&r, 1, true);
    for (int i = 0; i < 20 && !rsp.eof; i++)
        event_base_loop(r.base, EVLOOP_NONBLOCK);
    assert_true(rsp.eof);
    assert_null(strstr(buf_cstr(&rsp.cmds), "QUIT"));
    assert_false(relay_smtp_ready(r.c));
    rsp_finish(&r, &rsp);
}

/* No greeting at all: the greeting timeout. */
static void test_rsp_greeting_timeout(void **state)
{
    (void)state;
    struct rsp rsp = { .greeting = "" };
    struct relay_smtp_conf conf = base_conf();
    conf.timeouts.greeting_ms = 300;
    struct relay_smtp_job job = job3();
    struct run r;
    rsp_run(&r, &rsp, &conf, &job);
    expect_all(&r, DEFERRED, 0, "4.4.2", RELAY_PHASE_GREETING,
               "conversation with mx.remote.test[127.0.0.1] timed out while receiving the initial server greeting");
    rsp_finish(&r, &rsp);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

int main(void)
{
    log_init("test", LOG_CRIT, 2);
    signal(SIGPIPE, SIG_IGN);
    strcpy(tmpdir, "/tmp/test_relay_smtp.XXXXXX");
    if (mkdtemp(tmpdir) == NULL || chmod(tmpdir, 0755) != 0)
        return 1;
    snprintf(cert_file, sizeof cert_file, "%s/cert.pem", tmpdir);
    snprintf(key_file, sizeof key_file, "%s/key.pem", tmpdir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stuff_table),
        cmocka_unit_test(test_reply_table),
        cmocka_unit_test(test_policy_names),
        cmocka_unit_test(test_sink_deliver),
        cmocka_unit_test(test_sink_plain_extensions),
        cmocka_unit_test(test_sink_faults),
        cmocka_unit_test(test_sink_reuse),
        cmocka_unit_test(test_sink_smtputf8),
        cmocka_unit_test(test_connect_failures),
        cmocka_unit_test(test_quit_and_greeting_fallback),
        cmocka_unit_test(test_free_paths),
        cmocka_unit_test(test_rsp_pipelining_wire),
        cmocka_unit_test(test_rsp_large_body),
        cmocka_unit_test(test_rsp_rcpt_rejects),
        cmocka_unit_test(test_rsp_protocol_errors),
        cmocka_unit_test(test_rsp_size_utf8),
        cmocka_unit_test(test_rsp_starttls),
        cmocka_unit_test(test_rsp_idle_unsolicited),
        cmocka_unit_test(test_rsp_greeting_timeout),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < nsinks; i++) {
        if (sink_pids[i] > 0) {
            kill(sink_pids[i], SIGTERM);
            waitpid(sink_pids[i], NULL, 0);
        }
    }
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
