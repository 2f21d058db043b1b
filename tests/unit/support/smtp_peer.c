/*
 * smtp_peer.c - test support: smtp-sink processes, an in-process SMTP responder and a harness for
 * the outbound SMTP client (see smtp_peer.h).
 */
#include "smtp_peer.h"

#include <dirent.h>
#include <fcntl.h>
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
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "peer.h"
#include "tls.h"
#include "tls_client.h"

#define SINK "/usr/sbin/smtp-sink"
#define MAX_SINKS 64

char smtp_peer_cert_file[128];
char smtp_peer_key_file[128];
static char tmpdir[64];
static pid_t sink_pids[MAX_SINKS];      /* started and not yet stopped (0: stopped) */
static int nsinks;

int smtp_peer_setup(void **state)
{
    (void)state;
    if (tp_group_setup(tmpdir, "smtp_peer") != 0)
        return -1;
    snprintf(smtp_peer_cert_file, sizeof smtp_peer_cert_file, "%s/cert.pem", tmpdir);
    snprintf(smtp_peer_key_file, sizeof smtp_peer_key_file, "%s/key.pem", tmpdir);
    return 0;
}

int smtp_peer_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < nsinks; i++)
        tp_kill_wait(sink_pids[i], SIGTERM);
    tp_rmtree(tmpdir);
    return 0;
}

struct netaddr smtp_peer_loopback(int port)
{
    struct netaddr a = { .len = sizeof(struct sockaddr_in) };
    struct sockaddr_in sin = tp_loopback(port);
    memcpy(&a.ss, &sin, sizeof sin);
    return a;
}

/* ---- smtp-sink ---- */

/* Appends the file's bytes to b; false when it cannot be opened. */
static bool append_file(struct buf *b, const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        buf_append(b, chunk, (size_t)n);
    close(fd);
    return true;
}

void smtp_peer_sink_start(struct smtp_peer_sink *s, ...)
{
    static int seq;
    const char *argv[40];
    int n = 0;
    char dump[200], listen[64];
    s->port = tp_free_port();
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
    assert_true(nsinks < MAX_SINKS);
    s->pid = tp_spawn((char *const *)argv, s->out, NULL);
    sink_pids[nsinks++] = s->pid;
    struct tp_target t = { .port = s->port };
    if (tp_wait_ready(s->pid, tp_accepts, &t, 5000, NULL) != TP_READY)
        fail_msg("smtp-sink on port %d did not start (see %s)", s->port, s->out);
}

void smtp_peer_sink_stop(struct smtp_peer_sink *s)
{
    if (s->pid > 0) {
        tp_kill_wait(s->pid, SIGTERM);
        for (int i = 0; i < nsinks; i++)
            if (sink_pids[i] == s->pid)
                sink_pids[i] = 0;
        s->pid = 0;
    }
}

void smtp_peer_sink_counters(struct smtp_peer_sink *s, int want, int *sess, int *quit, int *mesg)
{
    *sess = *quit = *mesg = -1;
    for (int i = 0; i < 100; i++) {
        struct buf t = BUF_INIT;
        append_file(&t, s->out);
        const char *last = NULL;
        for (const char *p = buf_cstr(&t); (p = strstr(p, "sess=")) != NULL; p++)
            last = p;
        if (last != NULL)
            sscanf(last, "sess=%d quit=%d mesg=%d", sess, quit, mesg);
        buf_release(&t);
        if (*sess >= want)
            return;
        tp_sleep_ms(10);
    }
}

char *smtp_peer_sink_dump(struct smtp_peer_sink *s, int want)
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
            append_file(&all, path);
            n++;
        }
        closedir(d);
        if (n >= want)
            return buf_steal(&all);
        buf_release(&all);
        tp_sleep_ms(10);
    }
    fail_msg("smtp-sink wrote fewer than %d dump files", want);
    return NULL;
}

const char *smtp_peer_dump_field(const char *dump, const char *name, int nth)
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

const char *smtp_peer_dump_message(const char *dump)
{
    const char *p = strstr(dump, "\nReceived: ");
    assert_non_null(p);
    for (int i = 0; i < 3; i++)
        p = strchr(p + 1, '\n');
    return p + 1;
}

/* ---- running the client ---- */

void smtp_peer_done_cb(struct relay_smtp *c, const struct relay_smtp_report *rep, void *arg)
{
    struct smtp_peer_run *r = arg;
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
        assert_true(relay_smtp_send(c, j, smtp_peer_done_cb, r));
    }
    if (r->free_in_done) {
        relay_smtp_free(c);
        r->c = NULL;
    }
}

void smtp_peer_closed_cb(struct relay_smtp *c, void *arg)
{
    struct smtp_peer_run *r = arg;
    assert_ptr_equal(c, r->c);
    r->closed++;
}

static void guard_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct smtp_peer_run *r = arg;
    r->guard_fired = true;
    event_base_loopbreak(r->base);
}

void smtp_peer_run_until(struct smtp_peer_run *r, int ndone, bool want_closed)
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

struct relay_smtp_conf smtp_peer_conf(void)
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

const char smtp_peer_body_in[] =
    "From: <s@src.test>\r\nSubject: t\r\n\r\nline one\r\n.leading dot\r\n.\r\n..two\r\nbare\nlf\r\n"
    "bare\rcr\r\n8bit: \xc3\xa9\r\nno final line end";
const size_t smtp_peer_body_in_len = sizeof smtp_peer_body_in - 1;
const char smtp_peer_body_dumped[] =
    "From: <s@src.test>\nSubject: t\n\nline one\n.leading dot\n.\n..two\nbare\nlf\n"
    "bare\ncr\n8bit: \xc3\xa9\nno final line end\n\n";
const char smtp_peer_body_wire[] =
    "From: <s@src.test>\r\nSubject: t\r\n\r\nline one\r\n..leading dot\r\n..\r\n...two\r\nbare\r\nlf\r\n"
    "bare\r\ncr\r\n8bit: \xc3\xa9\r\nno final line end\r\n.\r\n";
const size_t smtp_peer_body_wire_len = sizeof smtp_peer_body_wire - 1;

struct relay_smtp_job smtp_peer_job3(void)
{
    return (struct relay_smtp_job){ .sender = "s@src.test", .envid = "id+1=x", .ret = DSN_RET_HDRS,
                                    .body = smtp_peer_body_in, .body_len = smtp_peer_body_in_len, .rcpts = rcpts3,
                                    .nrcpts = 3 };
}

void smtp_peer_run_open(struct smtp_peer_run *r, const struct relay_smtp_conf *conf, const struct netaddr *addrs,
                        size_t n)
{
    memset(r, 0, sizeof *r);
    r->base = event_base_new();
    r->c = relay_smtp_new(r->base, conf, addrs, n, smtp_peer_closed_cb, r);
}

void smtp_peer_run_job(struct smtp_peer_run *r, const struct relay_smtp_conf *conf, const struct netaddr *addrs,
                       size_t n, const struct relay_smtp_job *job, bool want_closed)
{
    smtp_peer_run_open(r, conf, addrs, n);
    assert_true(relay_smtp_send(r->c, job, smtp_peer_done_cb, r));
    assert_int_equal(r->done, 0);       /* never from inside the start call */
    smtp_peer_run_until(r, 1, want_closed);
}

void smtp_peer_run_free(struct smtp_peer_run *r)
{
    relay_smtp_free(r->c);
    event_base_free(r->base);
}

/* The check of smtp_peer_expect_all; label names the table case in the failure message, or is "". */
static void expect_results(const struct smtp_peer_run *r, const char *label, enum relay_smtp_outcome o, int code,
                           const char *status, enum relay_phase ph, const char *text)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct relay_smtp_result *x = &r->res[i];
        if (x->outcome != o || x->code != code || strcmp(x->status, status) != 0 || x->phase != ph
            || (text != NULL && strstr(x->text, text) == NULL))
            fail_msg("%srcpt %zu: outcome %d code %d status %s phase %s text \"%s\"", label, i, x->outcome, x->code,
                     x->status, relay_phase_name(x->phase), x->text);
    }
}

void smtp_peer_expect_all(const struct smtp_peer_run *r, enum relay_smtp_outcome o, int code, const char *status,
                          enum relay_phase ph, const char *text)
{
    expect_results(r, "", o, code, status, ph, text);
}

void smtp_peer_expect_rcpt(const struct smtp_peer_run *r, size_t k, enum relay_smtp_outcome o, int code,
                           const char *status, enum relay_phase ph, const char *text)
{
    assert_true(k < r->n);
    const struct relay_smtp_result *x = &r->res[k];
    assert_int_equal(x->outcome, o);
    assert_int_equal(x->code, code);
    assert_string_equal(x->status, status);
    assert_int_equal(x->phase, ph);
    assert_string_equal(x->text, text);
}

void smtp_peer_expect_case(const struct smtp_peer_run *r, size_t i, enum relay_smtp_outcome o, int code,
                           const char *status, enum relay_phase ph, const char *text)
{
    char label[32];
    snprintf(label, sizeof label, "case %zu ", i);
    expect_results(r, label, o, code, status, ph, text);
}

/* ---- the in-process responder ---- */

void smtp_peer_rsp_say(struct smtp_peer_rsp *r, const char *s)
{
    bufferevent_write(r->bev, s, strlen(s));
}

static void rsp_close(struct smtp_peer_rsp *r)
{
    if (r->bev != NULL)
        bufferevent_free(r->bev);
    r->bev = NULL;
    r->eof = true;
}

static void rsp_read(struct bufferevent *bev, void *arg);

static void rsp_write(struct bufferevent *bev, void *arg)
{
    struct smtp_peer_rsp *r = arg;
    if (r->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        rsp_close(r);
}

static void rsp_event(struct bufferevent *bev, short what, void *arg)
{
    struct smtp_peer_rsp *r = arg;
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

static void rsp_command(struct smtp_peer_rsp *r, const char *line)
{
    struct evbuffer *in = bufferevent_get_input(r->bev);
    buf_printf(&r->cmds, "%s\n", line);
    if (strncmp(line, "EHLO ", 5) == 0) {
        r->ehlos++;
        smtp_peer_rsp_say(r, r->ehlo != NULL ? r->ehlo
                              : r->tls != SMTP_PEER_TLS_OFF && r->ehlos == 1
                                  ? "250-resp.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
                                  : "250-resp.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    } else if (strncmp(line, "HELO ", 5) == 0) {
        smtp_peer_rsp_say(r, "250 resp.test\r\n");
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == SMTP_PEER_TLS_OK) {
        smtp_peer_rsp_say(r, "220 2.0.0 Ready to start TLS\r\n");
        SSL *ssl = SSL_new(r->ctx);
        struct bufferevent *f = bufferevent_openssl_filter_new(r->base, r->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                               BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        assert_non_null(f);
        bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
        r->bev = f;
        bufferevent_setcb(f, rsp_read, rsp_write, rsp_event, r);
        bufferevent_enable(f, EV_READ | EV_WRITE);
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == SMTP_PEER_TLS_BROKEN) {
        smtp_peer_rsp_say(r, "220 2.0.0 Ready to start TLS\r\n");
        r->broken_wait = true;
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == SMTP_PEER_TLS_INJECT) {
        smtp_peer_rsp_say(r, "220 2.0.0 Ready to start TLS\r\n250 injected\r\n");
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == SMTP_PEER_TLS_REFUSE) {
        smtp_peer_rsp_say(r, "454 4.7.0 TLS not available due to local problem\r\n");
    } else if (strcmp(line, "STARTTLS") == 0 && r->tls == SMTP_PEER_TLS_STALL) {
        smtp_peer_rsp_say(r, "220 2.0.0 Ready to start TLS\r\n");
        r->stalled = true;
    } else if (strncmp(line, "MAIL FROM:", 10) == 0) {
        r->pending_at_mail = count_lines(in);
        r->rcpt_ok = 0;
        smtp_peer_rsp_say(r, r->mail_reply != NULL ? r->mail_reply : "250 2.1.0 Ok\r\n");
    } else if (strncmp(line, "RCPT TO:", 8) == 0) {
        if (r->rcpt_reject != NULL && strstr(line, r->rcpt_reject) != NULL)
            smtp_peer_rsp_say(r, "550-5.1.1 <rejected>: Recipient address rejected:\r\n550 5.1.1 User unknown\r\n");
        else
            smtp_peer_rsp_say(r, "250 2.1.5 Ok\r\n");
        r->rcpt_ok += r->rcpt_reject == NULL || strstr(line, r->rcpt_reject) == NULL;
    } else if (strcmp(line, "DATA") == 0) {
        const char *rep = r->data_reply != NULL ? r->data_reply
                          : r->rcpt_ok > 0 ? "354 End data with <CR><LF>.<CR><LF>\r\n"
                                           : "554 5.5.1 Error: no valid recipients\r\n";
        smtp_peer_rsp_say(r, rep);
        r->in_data = strncmp(rep, "354", 3) == 0;
        buf_reset(&r->data);
    } else if (strcmp(line, "RSET") == 0) {
        smtp_peer_rsp_say(r, "250 2.0.0 Ok\r\n");
    } else if (strcmp(line, "QUIT") == 0) {
        smtp_peer_rsp_say(r, "221 2.0.0 Bye\r\n");
        r->closing = true;
    } else {
        smtp_peer_rsp_say(r, "502 5.5.2 Error: command not recognized\r\n");
    }
}

static void rsp_read(struct bufferevent *bev, void *arg)
{
    struct smtp_peer_rsp *r = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (r->stalled) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (r->broken_wait) {   /* the ClientHello gets plaintext back */
        evbuffer_drain(in, evbuffer_get_length(in));
        smtp_peer_rsp_say(r, "this is not TLS\r\n");
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
                smtp_peer_rsp_say(r, r->dot_reply != NULL ? r->dot_reply : "250 2.0.0 Ok: queued as X\r\n");
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
    struct smtp_peer_rsp *r = arg;
    (void)l;
    (void)sa;
    (void)len;
    r->conns++;
    assert_null(r->bev);    /* one connection at a time */
    r->bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    r->in_data = r->broken_wait = r->closing = r->stalled = false;
    bufferevent_setcb(r->bev, rsp_read, rsp_write, rsp_event, r);
    bufferevent_enable(r->bev, EV_READ | EV_WRITE);
    smtp_peer_rsp_say(r, r->greeting != NULL ? r->greeting : "220 resp.test ESMTP\r\n");
}

void smtp_peer_rsp_start(struct smtp_peer_rsp *r, struct event_base *base)
{
    r->base = base;
    r->lst = tp_listen(base, rsp_accept, r, 8, &r->port);
    if (r->tls != SMTP_PEER_TLS_OFF && r->ctx == NULL) {
        struct buf err = BUF_INIT;
        if (!tls_self_signed(smtp_peer_cert_file, smtp_peer_key_file, "mx.remote.test", &err))
            fail_msg("tls_self_signed: %s", buf_cstr(&err));
        r->ctx = tls_server_ctx_new(smtp_peer_cert_file, smtp_peer_key_file, &err);
        assert_non_null(r->ctx);
        buf_release(&err);
    }
}

void smtp_peer_rsp_stop(struct smtp_peer_rsp *r)
{
    rsp_close(r);
    evconnlistener_free(r->lst);
    SSL_CTX_free(r->ctx);
    buf_release(&r->cmds);
    buf_release(&r->data);
}

void smtp_peer_rsp_open(struct smtp_peer_run *r, struct smtp_peer_rsp *rsp, const struct relay_smtp_conf *conf)
{
    memset(r, 0, sizeof *r);
    r->base = event_base_new();
    smtp_peer_rsp_start(rsp, r->base);
    struct netaddr a = smtp_peer_loopback(rsp->port);
    r->c = relay_smtp_new(r->base, conf, &a, 1, smtp_peer_closed_cb, r);
}

void smtp_peer_rsp_wait_eof(struct smtp_peer_run *r, struct smtp_peer_rsp *rsp)
{
    for (int i = 0; i < 20 && !rsp->eof; i++)
        event_base_loop(r->base, EVLOOP_NONBLOCK);
}

void smtp_peer_rsp_run(struct smtp_peer_run *r, struct smtp_peer_rsp *rsp, const struct relay_smtp_conf *conf,
                       const struct relay_smtp_job *job)
{
    smtp_peer_rsp_open(r, rsp, conf);
    assert_true(relay_smtp_send(r->c, job, smtp_peer_done_cb, r));
    smtp_peer_run_until(r, 1, true);
    smtp_peer_rsp_wait_eof(r, rsp);
}

void smtp_peer_rsp_finish(struct smtp_peer_run *r, struct smtp_peer_rsp *rsp)
{
    smtp_peer_rsp_stop(rsp);
    smtp_peer_run_free(r);
}
