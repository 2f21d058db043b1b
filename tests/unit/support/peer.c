/*
 * peer.c - test support: loopback sockets, child processes, temp trees and loop runners (see
 * peer.h).
 */
#include "peer.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "buf.h"
#include "clock.h"
#include "log.h"

/* ---- sockets and ports ---- */

struct sockaddr_in tp_loopback(int port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

/* The kernel's choice of port for a socket bound to 127.0.0.1:0. */
static int bound_port(int fd)
{
    struct sockaddr_in sin = tp_loopback(0);
    socklen_t len = sizeof sin;
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0
        || getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        fail_msg("cannot bind a socket to 127.0.0.1: %s", strerror(errno));
    return ntohs(sin.sin_port);
}

int tp_free_port(void)
{
    for (;;) {
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(u >= 0);
        int port = bound_port(u);
        int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(t >= 0);
        struct sockaddr_in sin = tp_loopback(port);
        int rc = bind(t, (struct sockaddr *)&sin, sizeof sin);
        close(t);
        close(u);
        if (rc == 0)
            return port;        /* else TCP has it in use: another */
    }
}

int tp_udp_bound(int *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    *port = bound_port(fd);
    return fd;
}

int tp_tcp_listen(int backlog, int rcvbuf, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    *port = bound_port(fd);
    assert_int_equal(listen(fd, backlog), 0);
    return fd;
}

struct evconnlistener *tp_listen(struct event_base *base, evconnlistener_cb cb, void *arg, int backlog,
                                 int *port)
{
    struct sockaddr_in sin = tp_loopback(0);
    struct evconnlistener *l = evconnlistener_new_bind(base, cb, arg, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                                       backlog, (struct sockaddr *)&sin, sizeof sin);
    assert_non_null(l);
    socklen_t len = sizeof sin;
    assert_int_equal(getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return l;
}

void tp_full_open(struct tp_full *f)
{
    f->lfd = tp_tcp_listen(0, 0, &f->port);
    struct sockaddr_in sin = tp_loopback(f->port);
    for (size_t i = 0; i < sizeof f->fill / sizeof f->fill[0]; i++) {
        f->fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(f->fill[i] >= 0);
        (void)connect(f->fill[i], (struct sockaddr *)&sin, sizeof sin);    /* in progress: that is the point */
    }
}

void tp_full_close(struct tp_full *f)
{
    for (size_t i = 0; i < sizeof f->fill / sizeof f->fill[0]; i++)
        close(f->fill[i]);
    close(f->lfd);
}

int tp_connect(const struct tp_target *t)
{
    int fd;
    bool ok;
    if (t->path != NULL) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", t->path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ok = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
    } else {
        struct sockaddr_in sin = tp_loopback(t->port);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ok = fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0;
    }
    if (ok)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

bool tp_accepts(void *t)
{
    int fd = tp_connect(t);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* ---- processes and files ---- */

pid_t tp_spawn(char *const argv[], const char *out, const char *err)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)        /* the test died before the line above */
            _exit(127);
        int fd = open(out != NULL ? out : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int efd = err != NULL ? open(err, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : fd;
        if (fd >= 0)
            dup2(fd, 1);
        if (efd >= 0)
            dup2(efd, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

void tp_kill_wait(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    waitpid(pid, NULL, 0);
}

enum tp_wait tp_wait_ready(pid_t pid, bool (*ready)(void *), void *arg, long long ms, int *status)
{
    long long end = clock_mono_ms() + ms;
    for (;;) {
        int st;
        if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
            if (status != NULL)
                *status = st;
            return TP_EXITED;
        }
        if (ready(arg))
            return TP_READY;
        if (clock_mono_ms() >= end)
            return TP_TIMEOUT;
        tp_sleep_ms(10);
    }
}

/* The command made from fmt and ap into cmd (fails the test when it does not fit). */
static void format_cmd(char *cmd, size_t size, const char *fmt, va_list ap)
{
    int n = vsnprintf(cmd, size, fmt, ap);
    assert_true(n >= 0 && (size_t)n < size);
}

void tp_sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    format_cmd(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

char *tp_sh_output(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    format_cmd(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    struct buf out = BUF_INIT;
    tp_read_stream(p, &out);
    if (pclose(p) != 0) {
        buf_release(&out);
        fail_msg("command failed: %s", cmd);
    }
    while (out.len > 0 && out.data[out.len - 1] == '\n')
        out.data[--out.len] = '\0';
    return buf_steal(&out);
}

void tp_read_stream(FILE *f, struct buf *b)
{
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(b, chunk, n);
}

void tp_write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        fail_msg("cannot create %s: %s", path, strerror(errno));
    bool ok = fwrite(data, 1, len, f) == len;
    if (fclose(f) != 0 || !ok)
        fail_msg("cannot write %s", path);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tp_rmtree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void tp_cleanup(pid_t *pid, char *dir)
{
    if (pid != NULL) {
        tp_kill_wait(*pid, SIGKILL);
        *pid = -1;
    }
    if (dir[0] != '\0') {
        tp_rmtree(dir);
        dir[0] = '\0';
    }
}

int tp_group_setup(char dir[64], const char *name)
{
    log_init("test", LOG_CRIT, 2);
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, 64, "/tmp/%s.XXXXXX", name);
    if (mkdtemp(dir) == NULL || chmod(dir, 0755) != 0)
        return -1;
    return 0;
}

void tp_sleep_ms(long long ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- the event loop ---- */

bool tp_run_until(struct event_base *base, bool (*pred)(void *), void *arg, long long ms)
{
    long long end = clock_mono_ms() + ms;
    while (!pred(arg) && clock_mono_ms() < end) {
        struct timeval tv = { 0, 5000 };
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return pred(arg);
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

void tp_run_for(struct event_base *base, long long ms)
{
    tp_run_until(base, never, NULL, ms);
}

struct count_arg {
    const int *count;
    int want;
};

static bool count_reached(void *arg)
{
    const struct count_arg *c = arg;
    return *c->count >= c->want;
}

bool tp_run_count(struct event_base *base, const int *count, int want, long long ms)
{
    struct count_arg c = { count, want };
    return tp_run_until(base, count_reached, &c, ms);
}

struct all_arg {
    const char *v;
    size_t n, size, offset;
};

/* How many records have their counter set. */
static size_t count_set(const struct all_arg *a)
{
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++) {
        int c;
        memcpy(&c, a->v + i * a->size + a->offset, sizeof c);
        k += c != 0;
    }
    return k;
}

static bool all_set(void *arg)
{
    const struct all_arg *a = arg;
    return count_set(a) == a->n;
}

size_t tp_run_all(struct event_base *base, const void *v, size_t n, size_t size, size_t offset, long long ms)
{
    struct all_arg a = { v, n, size, offset };
    tp_run_until(base, all_set, &a, ms);
    return count_set(&a);
}
