/*
 * milter_peers.c - test support: real milters and a scripted milter (see milter_peers.h).
 *
 * The scripted milter records each packet as one line of seen:
 *   "O v=6 a=1ff p=ff7ff"            negotiation (hex actions and protocol flags)
 *   "D C j=mx.test {daemon_name}=mx" macros for a stage, name=value pairs
 *   "C host 4 25 192.0.2.1"          connect (family, port, address; "C host U" when unknown)
 *   "B 5"                            a body chunk and its length
 *   "M <a@b>|SIZE=10"                any other command: its NUL-terminated fields joined by '|'
 * A reply letter '.' in reply[] means: say nothing to that command.
 */
#include "milter_peers.h"

#include <dirent.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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
#include <event2/event.h>
#include <event2/listener.h>
#include <libmilter/mfapi.h>

#include "clock.h"
#include "peer.h"

const char milter_peers_eicar[] = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const char milter_peers_gtube[] = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

#define MAX_PROCS 16

static char tmpdir[64];
static pid_t procs[MAX_PROCS];          /* started and not yet stopped (0: exited) */
static int nprocs;
static char spamass_spec[64], clamav_spec[64];

int milter_peers_setup(void **state)
{
    (void)state;
    return tp_group_setup(tmpdir, "milter_peers");
}

/* SIGTERM to every process at once, a second to exit, then SIGKILL: spamd and clamd exit at once
 * (spamd stopping its children), the libmilter processes take about 5 s and hold no state. */
int milter_peers_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < nprocs; i++)
        if (procs[i] > 0)
            kill(procs[i], SIGTERM);
    long long end = clock_mono_ms() + 1000;
    for (int left = nprocs; left > 0 && clock_mono_ms() < end;) {
        left = 0;
        for (int i = 0; i < nprocs; i++) {
            if (procs[i] > 0 && waitpid(procs[i], NULL, WNOHANG) == procs[i])
                procs[i] = 0;
            left += procs[i] > 0;
        }
        tp_sleep_ms(10);
    }
    for (int i = 0; i < nprocs; i++)
        tp_kill_wait(procs[i], SIGKILL);
    nprocs = 0;
    spamass_spec[0] = clamav_spec[0] = '\0';
    if (getenv("MILTER_PEERS_KEEP") != NULL)
        fprintf(stderr, "milter_peers: kept %s\n", tmpdir);
    else
        tp_rmtree(tmpdir);
    return 0;
}

int milter_peers_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;   /* the directory's own fd */
}

/* ---- processes ---- */

static void track(pid_t pid)
{
    assert_true(nprocs < MAX_PROCS);
    procs[nprocs++] = pid;
}

/* A readiness probe: where to connect, what to send (NULL: connecting is enough) and what the
 * answer must contain. */
struct probe {
    struct tp_target at;
    const char *query;
    const char *want;
};

/* Sends the query and reads the answer (2 s at most); whether it contains want. */
static bool ask(void *arg)
{
    const struct probe *pr = arg;
    int fd = tp_connect(&pr->at);
    if (fd < 0)
        return false;
    struct timeval tv = { 2, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char got[256] = "";
    size_t n = 0;
    if (pr->query != NULL && write(fd, pr->query, strlen(pr->query)) == (ssize_t)strlen(pr->query)) {
        ssize_t r;
        while (n < sizeof got - 1 && (r = read(fd, got + n, sizeof got - 1 - n)) > 0)
            n += (size_t)r;
        got[n] = '\0';
    }
    close(fd);
    return pr->query == NULL || strstr(got, pr->want) != NULL;
}

/* Waits up to ms for the probe to succeed, failing the test if the process dies or time runs out. */
static void await(pid_t pid, const char *what, const char *out, int port, const char *path, const char *query,
                  const char *want, long long ms)
{
    struct probe pr = { { port, path }, query, want };
    int st = 0;
    switch (tp_wait_ready(pid, ask, &pr, ms, &st)) {
    case TP_READY:
        break;
    case TP_EXITED:
        for (int i = 0; i < nprocs; i++)
            if (procs[i] == pid)
                procs[i] = 0;
        fail_msg("%s exited (status 0x%x); see %s", what, st, out);
        break;
    case TP_TIMEOUT:
        fail_msg("%s did not start in %lld ms; see %s", what, ms, out);
        break;
    }
}

void milter_peers_spamass(char spec[64])
{
    if (spamass_spec[0] == '\0') {
        int sport = tp_free_port(), mport = tp_free_port();
        char listen[64], pidfile[128], out[128], sock[64], port[16];
        snprintf(listen, sizeof listen, "--listen=127.0.0.1:%d", sport);
        snprintf(pidfile, sizeof pidfile, "--pidfile=%s/spamd.pid", tmpdir);
        snprintf(out, sizeof out, "%s/spamd.log", tmpdir);
        /* -L: local tests only, no DNS; -x: no per-user configuration */
        char *sa[] = { "spamd", listen, "-L", "-x", "-m", "2", "--min-children=1", "-s", "stderr", pidfile,
                       geteuid() == 0 ? "-u" : NULL, "nobody", NULL };
        pid_t pid = tp_spawn(sa, out, NULL);
        track(pid);
        await(pid, "spamd", out, sport, NULL, "PING SPAMC/1.5\r\n\r\n", "PONG", 30000);
        snprintf(sock, sizeof sock, "inet:%d@127.0.0.1", mport);
        snprintf(port, sizeof port, "%d", sport);
        snprintf(out, sizeof out, "%s/spamass-milter.log", tmpdir);
        char *sm[] = { "spamass-milter", "-p", sock, "-r", "5", "--", "-d", "127.0.0.1", "-p", port, NULL };
        pid = tp_spawn(sm, out, NULL);
        track(pid);
        await(pid, "spamass-milter", out, mport, NULL, NULL, NULL, 10000);
        snprintf(spamass_spec, sizeof spamass_spec, "%s", sock);
    }
    snprintf(spec, 64, "%s", spamass_spec);
}

/* Writes text into DIR/name. */
static void write_file(const char *name, const char *text)
{
    tp_write_file(tmpdir, name, text, strlen(text));
}

/* Writes conf into DIR/NAME.conf and starts "NAME -c DIR/NAME.conf" (tracked), its output into
 * out = DIR/NAME.out. */
static pid_t start_conf(const char *name, const char *conf, char out[160])
{
    char file[64], path[160];
    snprintf(file, sizeof file, "%s.conf", name);
    write_file(file, conf);
    snprintf(path, sizeof path, "%s/%s", tmpdir, file);
    snprintf(out, 160, "%s/%s.out", tmpdir, name);
    char *argv[] = { (char *)name, "-c", path, NULL };
    pid_t pid = tp_spawn(argv, out, NULL);
    track(pid);
    return pid;
}

void milter_peers_clamav(char spec[64])
{
    if (clamav_spec[0] == '\0') {
        char path[160], db[160], conf[1024], out[160], cmd[400];
        snprintf(db, sizeof db, "%s/db", tmpdir);
        assert_int_equal(mkdir(db, 0755), 0);
        write_file("eicar.txt", milter_peers_eicar);
        /* the only signature clamd gets: the MD5 of the EICAR file, as sigtool writes it */
        snprintf(path, sizeof path, "%s/db/test.hdb", tmpdir);
        snprintf(out, sizeof out, "%s/sigtool.err", tmpdir);
        snprintf(cmd, sizeof cmd, "%s/eicar.txt", tmpdir);
        char *st[] = { "sigtool", "--md5", cmd, NULL };
        pid_t pid = tp_spawn(st, path, out);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        const char *user = geteuid() == 0 ? "User root\n" : "";
        snprintf(conf, sizeof conf,
                 "LocalSocket %s/clamd.sock\nDatabaseDirectory %s\nForeground yes\n%sLogFile %s/clamd.log\n"
                 "PidFile %s/clamd.pid\nTemporaryDirectory %s\n",
                 tmpdir, db, user, tmpdir, tmpdir, tmpdir);
        pid = start_conf("clamd", conf, out);
        char sock[160];
        snprintf(sock, sizeof sock, "%s/clamd.sock", tmpdir);
        await(pid, "clamd", out, 0, sock, "PING\n", "PONG", 30000);

        int mport = tp_free_port();
        snprintf(conf, sizeof conf,
                 "MilterSocket inet:%d@127.0.0.1\nClamdSocket unix:%s\nOnInfected Reject\nForeground yes\n%s"
                 "LogFile %s/clamav-milter.log\nPidFile %s/clamav-milter.pid\n",
                 mport, sock, user, tmpdir, tmpdir);
        pid = start_conf("clamav-milter", conf, out);
        await(pid, "clamav-milter", out, mport, NULL, NULL, NULL, 10000);
        snprintf(clamav_spec, sizeof clamav_spec, "inet:%d@127.0.0.1", mport);
    }
    snprintf(spec, 64, "%s", clamav_spec);
}

/* ---- the scripted milter ---- */

void milter_peer_pkt(struct buf *b, char cmd, const void *data, size_t len)
{
    uint32_t l = (uint32_t)len + 1;
    unsigned char h[5] = { (unsigned char)(l >> 24), (unsigned char)(l >> 16), (unsigned char)(l >> 8),
                           (unsigned char)l, (unsigned char)cmd };
    buf_append(b, h, 5);
    buf_append(b, data, len);
}

static void say(struct milter_peer *p, const struct buf *b)
{
    if (p->bev != NULL && b->len > 0)
        bufferevent_write(p->bev, b->data, b->len);
}

static void hang_up(struct milter_peer *p)
{
    if (p->timer != NULL)
        evtimer_del(p->timer);
    if (p->bev != NULL) {
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    p->eof = true;
}

/* Sends the reply configured for command cmd ('c' by default). */
static void reply(struct milter_peer *p, char cmd)
{
    char r = p->reply[(unsigned char)cmd & 127] ? p->reply[(unsigned char)cmd & 127] : 'c';
    if (r == '.')
        return;
    struct buf b = BUF_INIT;
    const char *text = p->reply_text[(unsigned char)cmd & 127];
    if (r == 'y' && text != NULL)
        milter_peer_pkt(&b, r, text, strlen(text) + 1);
    else
        milter_peer_pkt(&b, r, "", 0);
    say(p, &b);
    buf_release(&b);
}

/* The end-of-message script: delay, progress packets, modifications, reply. */
static void eom_next(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct milter_peer *p = arg;
    struct buf b = BUF_INIT;
    if (p->progress_left < 0) {                 /* the delay is over */
        p->progress_left = p->progress_n;
    } else if (p->progress_left > 0) {
        milter_peer_pkt(&b, SMFIR_PROGRESS, "", 0);
        say(p, &b);
        p->progress_left--;
    }
    buf_release(&b);
    if (p->progress_left > 0) {
        struct timeval tv = { p->progress_ms / 1000, (p->progress_ms % 1000) * 1000 };
        evtimer_add(p->timer, &tv);
        return;
    }
    say(p, &p->eom);
    reply(p, SMFIC_BODYEOB);
}

static void start_eom(struct milter_peer *p)
{
    p->progress_left = -1;
    struct timeval tv = { p->eom_delay_ms / 1000, (p->eom_delay_ms % 1000) * 1000 };
    evtimer_add(p->timer, &tv);
}

/* Appends the fields of a packet's data to seen. */
static void record(struct milter_peer *p, char cmd, const unsigned char *d, size_t n)
{
    struct buf *s = &p->seen;
    buf_putc(s, cmd);
    if (cmd == SMFIC_OPTNEG && n >= 12) {
        buf_printf(s, " v=%u a=%x p=%x", (unsigned)(d[3] | d[2] << 8), (unsigned)(d[6] << 8 | d[7]),
                   (unsigned)(d[9] << 16 | d[10] << 8 | d[11]));
    } else if (cmd == SMFIC_MACRO && n >= 1) {
        buf_printf(s, " %c", d[0]);
        for (size_t i = 1; i < n;) {
            const char *name = (const char *)d + i;
            size_t nl = strnlen(name, n - i);
            const char *val = name + nl + 1;
            size_t vl = i + nl + 1 < n ? strnlen(val, n - i - nl - 1) : 0;
            buf_printf(s, " %.*s=%.*s", (int)nl, name, (int)vl, val);
            i += nl + vl + 2;
        }
    } else if (cmd == SMFIC_CONNECT) {
        size_t hl = strnlen((const char *)d, n);
        buf_printf(s, " %.*s", (int)hl, (const char *)d);
        if (hl + 1 < n) {
            buf_printf(s, " %c", d[hl + 1]);
            if (hl + 4 < n)
                buf_printf(s, " %u %.*s", (unsigned)(d[hl + 2] << 8 | d[hl + 3]), (int)(n - hl - 5),
                           (const char *)d + hl + 4);
        }
    } else if (cmd == SMFIC_BODY) {
        buf_printf(s, " %zu", n);
    } else if (n > 0) {
        buf_putc(s, ' ');
        for (size_t i = 0; i < n; i++)
            buf_putc(s, d[i] == '\0' ? (i + 1 < n ? '|' : '\0') : (char)d[i]);
        if (s->len > 0 && s->data[s->len - 1] == '\0')
            s->len--;
    }
    buf_putc(s, '\n');
}

/* The SMFIP_NR_ flag that silences the reply to cmd, 0 for none. */
static uint32_t nr_flag(char cmd)
{
    switch (cmd) {
    case SMFIC_CONNECT: return SMFIP_NR_CONN;
    case SMFIC_HELO: return SMFIP_NR_HELO;
    case SMFIC_MAIL: return SMFIP_NR_MAIL;
    case SMFIC_RCPT: return SMFIP_NR_RCPT;
    case SMFIC_DATA: return SMFIP_NR_DATA;
    case SMFIC_HEADER: return SMFIP_NR_HDR;
    case SMFIC_EOH: return SMFIP_NR_EOH;
    case SMFIC_BODY: return SMFIP_NR_BODY;
    case SMFIC_UNKNOWN: return SMFIP_NR_UNKN;
    default: return 0;
    }
}

static void on_packet(struct milter_peer *p, char cmd, const unsigned char *d, size_t n)
{
    record(p, cmd, d, n);
    if (p->mode == MILTER_PEER_SILENT)
        return;
    struct buf b = BUF_INIT;
    switch (cmd) {
    case SMFIC_OPTNEG:
        if (p->mode == MILTER_PEER_GARBAGE) {
            say(p, &p->garbage);
        } else if (p->mode == MILTER_PEER_HANGUP) {
            hang_up(p);
        } else {
            uint32_t v[3] = { htonl(p->version ? p->version : 6), htonl(p->actions), htonl(p->proto) };
            struct buf data = BUF_INIT;
            buf_append(&data, v, sizeof v);
            buf_append(&data, p->optneg_extra.data, p->optneg_extra.len);
            milter_peer_pkt(&b, SMFIC_OPTNEG, data.data, data.len);
            say(p, &b);
            buf_release(&data);
        }
        break;
    case SMFIC_MACRO:
    case SMFIC_ABORT:
    case SMFIC_QUIT_NC:
        break;
    case SMFIC_QUIT:
        hang_up(p);
        break;
    case SMFIC_BODYEOB:
        start_eom(p);
        break;
    default:
        if ((p->proto & nr_flag(cmd)) == 0)
            reply(p, cmd);
    }
    buf_release(&b);
}

static void peer_read(struct bufferevent *bev, void *arg)
{
    struct milter_peer *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (p->bev == bev && evbuffer_get_length(in) >= 4) {
        unsigned char h[4];
        evbuffer_copyout(in, h, 4);
        size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        assert_true(len >= 1 && len < 16 * 1024 * 1024);
        if (evbuffer_get_length(in) < 4 + len)
            return;
        unsigned char *pkt = evbuffer_pullup(in, (ssize_t)(4 + len));
        struct buf copy = BUF_INIT;
        buf_append(&copy, pkt + 4, len);
        evbuffer_drain(in, 4 + len);
        on_packet(p, copy.data[0], (const unsigned char *)copy.data + 1, len - 1);
        buf_release(&copy);
    }
}

static void peer_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    struct milter_peer *p = arg;
    if (p->bev == bev)
        hang_up(p);
}

static void peer_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l, (void)sa, (void)salen;
    struct milter_peer *p = arg;
    hang_up(p);
    p->eof = false;
    p->conns++;
    p->bev = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(p->bev, peer_read, NULL, peer_event, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
}

void milter_peer_start(struct milter_peer *p, struct event_base *base)
{
    p->base = base;
    p->lst = tp_listen(base, peer_accept, p, 16, &p->port);
    p->timer = evtimer_new(base, eom_next, p);
    snprintf(p->spec, sizeof p->spec, "inet:%d@127.0.0.1", p->port);
}

void milter_peer_stop(struct milter_peer *p)
{
    hang_up(p);
    if (p->lst != NULL)
        evconnlistener_free(p->lst);
    if (p->timer != NULL)
        event_free(p->timer);
    p->lst = NULL;
    p->timer = NULL;
    buf_release(&p->optneg_extra);
    buf_release(&p->garbage);
    buf_release(&p->eom);
    buf_release(&p->seen);
}
