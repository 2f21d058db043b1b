/*
 * lmtp_peer.c - test support: smtp-sink -L and Dovecot LMTP processes, and an in-process LMTP
 * responder (see lmtp_peer.h).
 */
#include "lmtp_peer.h"

#include <fcntl.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "clock.h"
#include "peer.h"

#define SINK "/usr/sbin/smtp-sink"
#define DOVECOT "/usr/sbin/dovecot"
#define MAX_CHILDREN 64

static char tmpdir[64];
static pid_t children[MAX_CHILDREN];    /* servers started and not yet stopped (0: stopped) */
static int nchildren;

static void stop_child(pid_t pid)
{
    tp_kill_wait(pid, SIGTERM);
    for (int i = 0; i < nchildren; i++)
        if (children[i] == pid)
            children[i] = 0;
}

static void cleanup(void)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0)
            stop_child(children[i]);
    nchildren = 0;
    tp_cleanup(NULL, tmpdir);
}

/* An interrupted run (Ctrl-C, a harness timeout) cleans up too; the servers die with the test
 * anyway (PR_SET_PDEATHSIG). */
static void on_signal(int sig)
{
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

int lmtp_peer_setup(void **state)
{
    (void)state;
    /* Dovecot's and smtp-sink's unprivileged processes must reach into it */
    if (tp_group_setup(tmpdir, "lmtp_peer") != 0)
        return -1;
    static bool registered;
    if (!registered && atexit(cleanup) == 0) {
        registered = true;
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
    return 0;
}

int lmtp_peer_teardown(void **state)
{
    (void)state;
    cleanup();
    return 0;
}

struct event_base *lmtp_peer_base_new(void)
{
    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    assert_non_null(base);
    return base;
}

void lmtp_peer_base_free(struct event_base *base)
{
    tp_run_for(base, 20);
    event_base_free(base);
}

/* Starts argv with stdout and stderr into out (if not NULL), and tracks it for cleanup(). */
static pid_t spawn(const char *const *argv, const char *out)
{
    assert_true(nchildren < MAX_CHILDREN);
    pid_t pid = tp_spawn((char *const *)argv, out, NULL);
    children[nchildren++] = pid;
    return pid;
}

/* Waits up to ms for target ("127.0.0.1:PORT" or "unix:PATH") to accept while pid runs. */
static bool wait_accepts(pid_t pid, const char *target, long long ms)
{
    struct tp_target t = { 0 };
    if (strncmp(target, "unix:", 5) == 0)
        t.path = target + 5;
    else
        t.port = atoi(strchr(target, ':') + 1);
    switch (tp_wait_ready(pid, tp_accepts, &t, ms, NULL)) {
    case TP_READY:
        return true;
    case TP_EXITED:
        for (int i = 0; i < nchildren; i++)
            if (children[i] == pid)
                children[i] = 0;
        return false;
    case TP_TIMEOUT:
        break;
    }
    return false;
}

/* ---- smtp-sink ---- */

void lmtp_sink_start(struct lmtp_sink *s, bool unix_socket, ...)
{
    static int seq;
    const char *argv[40];
    int n = 0;
    seq++;
    snprintf(s->out, sizeof s->out, "%s/sink%d.out", tmpdir, seq);
    if (unix_socket)
        snprintf(s->target, sizeof s->target, "unix:%s/sink%d.sock", tmpdir, seq);
    else
        snprintf(s->target, sizeof s->target, "127.0.0.1:%d", tp_free_port());
    argv[n++] = SINK;
    if (geteuid() == 0) {   /* smtp-sink refuses to keep root privileges */
        assert_non_null(getpwnam("postfix"));
        argv[n++] = "-u";
        argv[n++] = "postfix";
    }
    argv[n++] = "-L";
    argv[n++] = "-c";
    va_list ap;
    va_start(ap, unix_socket);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 34;)
        argv[n++] = a;
    va_end(ap);
    argv[n++] = s->target;
    argv[n++] = "64";
    argv[n] = NULL;
    s->pid = spawn(argv, s->out);
    if (!wait_accepts(s->pid, s->target, 5000))
        fail_msg("smtp-sink on %s did not start (see %s)", s->target, s->out);
}

void lmtp_sink_stop(struct lmtp_sink *s)
{
    if (s->pid > 0)
        stop_child(s->pid);
    s->pid = 0;
}

void lmtp_sink_counters(struct lmtp_sink *s, int want, int *sess, int *quit)
{
    *sess = *quit = -1;
    for (int i = 0; i < 200; i++) {
        char text[8192];
        int fd = open(s->out, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
        if (fd >= 0)
            close(fd);
        text[n > 0 ? n : 0] = '\0';
        const char *last = NULL;
        for (const char *p = text; (p = strstr(p, "sess=")) != NULL; p++)
            last = p;
        if (last != NULL)
            sscanf(last, "sess=%d quit=%d", sess, quit);
        if (*sess >= want)
            return;
        tp_sleep_ms(10);
    }
}

/* ---- Dovecot ---- */

void lmtp_dovecot_start(struct lmtp_dovecot *d, const char *users)
{
    char dir[128], path[200];
    static int seq;
    snprintf(dir, sizeof dir, "%s/dovecot%d", tmpdir, ++seq);
    assert_int_equal(mkdir(dir, 0755), 0);
    const char *sub[] = { "mail", "base", "state" };
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, sub[i]);
        assert_int_equal(mkdir(path, 0755), 0);
    }
    struct passwd *mail = getpwnam("mail");
    assert_non_null(mail);
    snprintf(path, sizeof path, "%s/mail", dir);
    assert_int_equal(chown(path, mail->pw_uid, mail->pw_gid), 0);

    snprintf(path, sizeof path, "%s/users", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    char *list = strdup(users);
    for (char *save = NULL, *u = strtok_r(list, " ", &save); u != NULL; u = strtok_r(NULL, " ", &save))
        fprintf(f, "%s:{PLAIN}secret::::%s/mail/%s\n", u, dir, u);
    free(list);
    fclose(f);

    int port = tp_free_port();
    snprintf(d->target, sizeof d->target, "127.0.0.1:%d", port);
    char conf[200];
    snprintf(conf, sizeof conf, "%s/dovecot.conf", dir);
    f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "base_dir = %s/base\nstate_dir = %s/state\nlog_path = %s/dovecot.log\n"
            "default_internal_user = dovecot\ndefault_login_user = dovenull\nfirst_valid_uid = 8\n"
            "mail_uid = mail\nmail_gid = mail\nmail_location = maildir:%s/mail/%%n\n"
            "protocols = lmtp\nssl = no\nlisten = 127.0.0.1\nlmtp_rcpt_check_quota = no\n"
            "auth_username_format = %%n\n"
            "passdb {\n  driver = passwd-file\n  args = %s/users\n}\n"
            "userdb {\n  driver = passwd-file\n  args = %s/users\n  default_fields = uid=mail gid=mail\n}\n"
            "service lmtp {\n  inet_listener lmtp {\n    address = 127.0.0.1\n    port = %d\n  }\n}\n",
            dir, dir, dir, dir, dir, dir, port);
    fclose(f);
    const char *argv[] = { DOVECOT, "-F", "-c", conf, NULL };
    snprintf(path, sizeof path, "%s/dovecot.out", dir);
    d->pid = spawn(argv, path);
    if (!wait_accepts(d->pid, d->target, 10000))
        fail_msg("dovecot did not start (see %s and %s/dovecot.log)", path, dir);
}

void lmtp_dovecot_stop(struct lmtp_dovecot *d)
{
    if (d->pid > 0)
        stop_child(d->pid);
    d->pid = 0;
}

/* ---- the responder ---- */

struct lmtp_rsp_conn {
    struct lmtp_rsp *rsp;
    struct bufferevent *bev;
    int slot;               /* index in rsp->open */
    int nmail;              /* MAIL commands seen */
    int seq;                /* order of acceptance */
};

static void rsp_conn_free(struct lmtp_rsp_conn *c)
{
    c->rsp->open[c->slot] = NULL;
    bufferevent_free(c->bev);
    free(c);
}

static void rsp_write(struct lmtp_rsp_conn *c, const char *s)
{
    bufferevent_write(c->bev, s, strlen(s));
}

static bool verb_is(const char *line, const char *verb)
{
    size_t n = strlen(verb);
    return strncasecmp(line, verb, n) == 0 && (line[n] == '\0' || line[n] == ' ' || line[n] == ':');
}

static void rsp_read_cb(struct bufferevent *bev, void *arg)
{
    struct lmtp_rsp_conn *c = arg;
    struct lmtp_rsp *rsp = c->rsp;
    struct evbuffer *in = bufferevent_get_input(bev);
    char *line;
    size_t n;
    while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
        buf_append(&rsp->cmds, line, n);
        buf_putc(&rsp->cmds, '\n');
        const char *reply;
        bool close_after = false;
        if (verb_is(line, "LHLO")) {
            reply = rsp->lhlo != NULL ? rsp->lhlo : "250-rsp\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n";
        } else if (verb_is(line, "MAIL")) {
            rsp->mail_pipelined = evbuffer_get_length(in) > 0;
            if (++c->nmail == rsp->drop_at_mail) {
                free(line);
                rsp_conn_free(c);
                return;
            }
            reply = rsp->mail != NULL ? rsp->mail : "250 2.1.0 Ok\r\n";
        } else if (verb_is(line, "RCPT")) {
            reply = rsp->rcpt != NULL ? rsp->rcpt : "250 2.1.5 Ok\r\n";
        } else if (verb_is(line, "RSET")) {
            reply = rsp->rset != NULL ? rsp->rset : "250 2.0.0 Ok\r\n";
        } else if (verb_is(line, "QUIT")) {
            rsp->quits++;
            reply = "221 2.0.0 Bye\r\n";
            close_after = true;
        } else {
            reply = "502 5.5.2 Unknown command\r\n";
        }
        free(line);
        rsp_write(c, reply);
        if (close_after) {
            rsp_conn_free(c);
            return;
        }
    }
}

static void rsp_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct lmtp_rsp_conn *c = arg;
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        c->rsp->eofs++;
        rsp_conn_free(c);
    }
}

static void rsp_accept_cb(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct lmtp_rsp *rsp = arg;
    (void)lst;
    (void)sa;
    (void)len;
    rsp->conns++;
    int slot = 0;
    while (slot < LMTP_RSP_MAX_CONNS && rsp->open[slot] != NULL)
        slot++;
    if (slot == LMTP_RSP_MAX_CONNS) {
        close(fd);
        return;
    }
    struct lmtp_rsp_conn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->rsp = rsp;
    c->slot = slot;
    c->seq = rsp->conns;
    c->bev = bufferevent_socket_new(rsp->base, fd, BEV_OPT_CLOSE_ON_FREE);
    rsp->open[slot] = c;
    bufferevent_setcb(c->bev, rsp_read_cb, NULL, rsp_event_cb, c);
    bufferevent_enable(c->bev, EV_READ);
    rsp_write(c, rsp->greeting != NULL ? rsp->greeting : "220 rsp LMTP\r\n");
}

void lmtp_rsp_start(struct lmtp_rsp *rsp, struct event_base *base)
{
    rsp->base = base;
    buf_init(&rsp->cmds);
    int port;
    rsp->lst = tp_listen(base, rsp_accept_cb, rsp, 64, &port);
    snprintf(rsp->target, sizeof rsp->target, "127.0.0.1:%d", port);
}

void lmtp_rsp_close_all(struct lmtp_rsp *rsp)
{
    for (int i = 0; i < LMTP_RSP_MAX_CONNS; i++)
        if (rsp->open[i] != NULL)
            rsp_conn_free(rsp->open[i]);
}

void lmtp_rsp_close_one(struct lmtp_rsp *rsp)
{
    struct lmtp_rsp_conn *oldest = NULL;
    for (int i = 0; i < LMTP_RSP_MAX_CONNS; i++)
        if (rsp->open[i] != NULL && (oldest == NULL || rsp->open[i]->seq < oldest->seq))
            oldest = rsp->open[i];
    if (oldest != NULL)
        rsp_conn_free(oldest);
}

void lmtp_rsp_stop(struct lmtp_rsp *rsp)
{
    lmtp_rsp_close_all(rsp);
    if (rsp->lst != NULL)
        evconnlistener_free(rsp->lst);
    rsp->lst = NULL;
    buf_release(&rsp->cmds);
}

void lmtp_rsp_say(struct lmtp_rsp *rsp, const char *s)
{
    for (int i = 0; i < LMTP_RSP_MAX_CONNS; i++)
        if (rsp->open[i] != NULL)
            rsp_write(rsp->open[i], s);
}

/* ---- running lookups ---- */

void lmtp_ans_cb(enum verify_answer a, void *arg)
{
    static int answers;
    struct lmtp_ans *r = arg;
    r->n++;
    r->a = a;
    r->at = clock_mono_ms();
    r->seq = ++answers;
    if (r->again_src != NULL)
        r->again_src->lookup(r->again_src, r->again_path, lmtp_ans_cb, r->again_ans);
    if (r->free_src != NULL)
        r->free_src->free(r->free_src);
}

void lmtp_path(struct smtp_path *p, const char *s)
{
    static const struct smtp_addr_limits lim = { 64, 255, 256 };
    size_t used;
    memset(p, 0, sizeof *p);
    assert_int_equal(smtp_path_parse(s, strlen(s), &lim, true, false, p, &used), SMTP_ADDR_OK);
}

void lmtp_wait_answers(struct event_base *base, struct lmtp_ans *a, size_t n)
{
    assert_int_equal(tp_run_all(base, a, n, sizeof *a, offsetof(struct lmtp_ans, n), 8000), n);
}

enum verify_answer lmtp_ask(struct event_base *base, struct verify_source *src, const char *addr)
{
    struct smtp_path p;
    lmtp_path(&p, addr);
    struct lmtp_ans a = { 0 };
    src->lookup(src, &p, lmtp_ans_cb, &a);
    lmtp_wait_answers(base, &a, 1);
    tp_run_for(base, 20);
    assert_int_equal(a.n, 1);
    smtp_path_clear(&p);
    return a.a;
}
