/*
 * ops_run.c - `mxgate run`: the appliance in one command.
 *
 * Prepares state_dir (locked against a second `mxgate run` on it), makes a self-signed TLS pair
 * when none is configured, starts a private redis-server on a unix socket with the durable
 * settings the queue requires (when redis.url is empty), then starts each role as a child process
 * (`mxgate ROLE` with the same -c/-o plus the private Redis and TLS settings) and restarts any
 * that dies, with exponential backoff. SIGTERM/SIGINT stop the roles first (so every message in
 * flight is answered), then Redis (which completes its AOF), then exit 0.
 *
 * Children run in their own process group, so a terminal's Ctrl-C reaches only this supervisor
 * and the shutdown order holds.
 */
#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "conf.h"
#include "log.h"
#include "mem.h"
#include "redis.h"
#include "tls.h"

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
#define HEALTHY_MS 60000            /* a child that lived this long starts its backoff afresh */
#define ROLE_STOP_MS 15000
#define REDIS_STOP_MS 30000
#define REDIS_READY_MS 120000       /* a large AOF takes a while to load */

struct child {
    const char *name;               /* "redis", "edge" */
    char **argv;                    /* NULL-terminated, owned */
    pid_t pid;                      /* 0 when not running */
    long long started_ms;
    long long backoff_ms;
    struct event *restart;          /* pending restart */
    struct supervisor *sup;
};

struct supervisor {
    struct event_base *base;
    struct child redis;             /* argv NULL when an external Redis is used */
    struct child *roles;
    size_t nroles;
    bool stopping;
    long long stop_deadline_ms;
    struct event *sigterm, *sigint, *sigchld, *stop_timer;
    char redis_sock[PATH_MAX];
};

static void argv_push(char ***argv, size_t *n, const char *s)
{
    *argv = xrealloc(*argv, (*n + 2) * sizeof **argv);
    (*argv)[(*n)++] = s != NULL ? xstrdup(s) : NULL;
    (*argv)[*n] = NULL;
}

static void argv_free(char **argv)
{
    if (argv == NULL)
        return;
    for (char **p = argv; *p != NULL; p++)
        free(*p);
    free(argv);
}

/* "STATE/rel", malloc'd. */
static char *state_path(const char *state, const char *rel)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s/%s", state, rel);
    return buf_steal(&b);
}

static bool mkdirs(const char *path, mode_t mode, struct buf *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        buf_printf(err, "%s: path too long", path);
        return false;
    }
    for (char *p = tmp + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, mode) != 0 && errno != EEXIST) {
                buf_printf(err, "cannot create %s: %s", tmp, strerror(errno));
                return false;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return true;
}

static bool spawn(struct child *c)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_msg(LOG_ERR, "spawn-failed", NULL, "%s: fork: %s", c->name, strerror(errno));
        return false;
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* A supervisor that dies, even by SIGKILL, takes its children with it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(c->argv[0], c->argv);
        fprintf(stderr, "mxgate run: cannot execute %s: %s\n", c->argv[0], strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    c->started_ms = clock_mono_ms();
    log_msg(LOG_INFO, "role-started", NULL, "%s pid %ld", c->name, (long)pid);
    return true;
}

static void restart_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct child *c = arg;
    if (!c->sup->stopping && c->pid == 0)
        spawn(c);
}

/* A child ended: log how, and unless stopping, schedule its restart with backoff. */
static void child_exited(struct supervisor *sup, struct child *c, int status)
{
    long long lived = clock_mono_ms() - c->started_ms;
    c->pid = 0;
    char how[64];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
    if (sup->stopping) {
        log_msg(LOG_INFO, "role-stopped", NULL, "%s: %s", c->name, how);
        return;
    }
    if (lived > HEALTHY_MS || c->backoff_ms == 0)
        c->backoff_ms = BACKOFF_MIN_MS;
    else if (c->backoff_ms < BACKOFF_MAX_MS)
        c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    log_msg(LOG_ERR, "role-died", NULL, "%s: %s after %lld ms; restarting in %lld ms", c->name, how,
            lived, c->backoff_ms);
    struct timeval tv = { c->backoff_ms / 1000, (c->backoff_ms % 1000) * 1000 };
    evtimer_add(c->restart, &tv);
}

static bool any_role_running(const struct supervisor *sup)
{
    for (size_t i = 0; i < sup->nroles; i++)
        if (sup->roles[i].pid != 0)
            return true;
    return false;
}

static void stop_step(struct supervisor *sup);

static void sigchld_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct supervisor *sup = arg;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == sup->redis.pid) {
            child_exited(sup, &sup->redis, status);
            continue;
        }
        for (size_t i = 0; i < sup->nroles; i++)
            if (sup->roles[i].pid == pid)
                child_exited(sup, &sup->roles[i], status);
    }
    if (sup->stopping)
        stop_step(sup);
}

/* Shutdown, one stage at a time: roles, then Redis, then leave the loop. */
static void stop_step(struct supervisor *sup)
{
    if (any_role_running(sup)) {
        if (clock_mono_ms() > sup->stop_deadline_ms) {
            for (size_t i = 0; i < sup->nroles; i++)
                if (sup->roles[i].pid != 0) {
                    log_msg(LOG_WARN, "role-kill", NULL, "%s did not stop in time", sup->roles[i].name);
                    kill(sup->roles[i].pid, SIGKILL);
                }
        }
        return;
    }
    if (sup->redis.pid != 0) {
        static bool told;
        if (!told) {
            told = true;
            sup->stop_deadline_ms = clock_mono_ms() + REDIS_STOP_MS;
            kill(sup->redis.pid, SIGTERM);
        } else if (clock_mono_ms() > sup->stop_deadline_ms) {
            log_msg(LOG_WARN, "role-kill", NULL, "redis did not stop in time");
            kill(sup->redis.pid, SIGKILL);
        }
        return;
    }
    event_base_loopexit(sup->base, NULL);
}

static void stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct supervisor *sup = arg;
    stop_step(sup);
    struct timeval tv = { 0, 200000 };
    evtimer_add(sup->stop_timer, &tv);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct supervisor *sup = arg;
    if (sup->stopping)
        return;
    sup->stopping = true;
    log_msg(LOG_INFO, "stopping", NULL, "signal %d: stopping the roles, then Redis", (int)sig);
    sup->stop_deadline_ms = clock_mono_ms() + ROLE_STOP_MS;
    for (size_t i = 0; i < sup->nroles; i++) {
        evtimer_del(sup->roles[i].restart);
        if (sup->roles[i].pid != 0)
            kill(sup->roles[i].pid, SIGTERM);
    }
    evtimer_del(sup->redis.restart);
    stop_timer_cb(-1, 0, sup);
}

/* Builds the private Redis's command line: durable by construction (docs/queue.md). */
static void redis_argv(struct supervisor *sup, const char *state, struct child *c)
{
    char *dir = state_path(state, "redis");
    char *logfile = state_path(state, "redis/redis.log");
    size_t n = 0;
    const char *args[] = {
        conf.redis_server, "--port", "0", "--unixsocket", sup->redis_sock, "--unixsocketperm", "700",
        "--dir", dir, "--logfile", logfile, "--daemonize", "no",
        "--appendonly", "yes", "--appendfsync", "always", "--no-appendfsync-on-rewrite", "no",
        "--maxmemory-policy", "noeviction", "--save", "",
    };
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++)
        argv_push(&c->argv, &n, args[i]);
    free(dir);
    free(logfile);
}

/* Waits (blocking: nothing else runs yet) until the private Redis answers PING. */
static bool redis_wait_ready(struct supervisor *sup, struct buf *err)
{
    struct redis_target t = { .path = sup->redis_sock };
    long long deadline = clock_mono_ms() + REDIS_READY_MS;
    while (clock_mono_ms() < deadline) {
        int status;
        if (waitpid(sup->redis.pid, &status, WNOHANG) == sup->redis.pid) {
            sup->redis.pid = 0;
            buf_printf(err, "redis-server exited at start (see %s/redis/redis.log)", conf.state_dir);
            return false;
        }
        struct buf e = BUF_INIT;
        redisContext *c = redis_connect_sync(&t, 1000, &e);
        buf_release(&e);
        if (c != NULL) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r != NULL && r->type == REDIS_REPLY_STATUS;
            if (r != NULL)
                freeReplyObject(r);
            redisFree(c);
            if (up)
                return true;
        }
        usleep(50000);
    }
    buf_puts(err, "redis-server did not answer in time");
    return false;
}

static char *override(const char *key, const char *val)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s=%s", key, val);
    return buf_steal(&b);
}

static void print_summary(const struct supervisor *sup)
{
    printf("mxgate is running (state in %s). Ctrl-C stops it.\n", conf.state_dir);
    for (size_t i = 0; i < conf.edge_listen.n; i++)
        printf("  SMTP (MX)         %s\n", conf.edge_listen.v[i]);
    for (size_t i = 0; i < conf.edge_submission_listen.n; i++)
        printf("  submission        %s (STARTTLS, AUTH required)\n", conf.edge_submission_listen.v[i]);
    for (size_t i = 0; i < conf.edge_smtps_listen.n; i++)
        printf("  submission (TLS)  %s\n", conf.edge_smtps_listen.v[i]);
    if (sup->redis.argv != NULL)
        printf("  queue             private Redis, unix:%s (appendfsync always)\n", sup->redis_sock);
    else
        printf("  queue             %s\n", conf.redis_url);
    if (conf.relay_smarthost[0] != '\0')
        printf("  relay             remote mail via %s\n", conf.relay_smarthost);
    else
        printf("  relay             remote mail by MX lookup, port %lld\n", conf.relay_mx_port);
    printf("  local mail        Maildirs under %s/mailboxes/<user>/Maildir\n", conf.state_dir);
    printf("  local domains     ");
    for (size_t i = 0; i < conf.local_domains.n; i++)
        printf("%s%s", i ? ", " : "", conf.local_domains.v[i]);
    printf("\n");
    fflush(stdout);
}

int ops_run(const struct ops_args *a)
{
    struct buf err = BUF_INIT;
    struct supervisor sup;
    memset(&sup, 0, sizeof sup);
    int rc = 1;
    int lockfd = -1;
    char state[PATH_MAX];
    char **extra = NULL;            /* -o overrides handed to every role */
    size_t nextra = 0;

    if (!mkdirs(conf.state_dir, 0750, &err))
        goto out;
    if (realpath(conf.state_dir, state) == NULL) {
        buf_printf(&err, "%s: %s", conf.state_dir, strerror(errno));
        goto out;
    }
    char *lock = state_path(state, "run.lock");
    lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) != 0)
        buf_printf(&err, "%s is in use by another mxgate run (lock %s)", state, lock);
    free(lock);
    if (err.len > 0)
        goto out;

    if (conf.tls_cert[0] == '\0') {
        /* A fresh appliance offers STARTTLS and AUTH at once, with a self-signed certificate. */
        char *dir = state_path(state, "tls");
        char *cert = state_path(state, "tls/cert.pem");
        char *key = state_path(state, "tls/key.pem");
        const char *host = conf.edge_hostname[0] ? conf.edge_hostname : "localhost";
        bool made = mkdirs(dir, 0700, &err) && tls_self_signed(cert, key, host, &err);
        if (made) {
            extra = xrealloc(extra, (nextra + 2) * sizeof *extra);
            extra[nextra++] = override("tls.cert", cert);
            extra[nextra++] = override("tls.key", key);
        }
        free(dir);
        free(cert);
        free(key);
        if (!made)
            goto out;
    }

    sup.base = event_base_new();
    sup.redis.name = "redis";
    sup.redis.sup = &sup;
    sup.redis.restart = evtimer_new(sup.base, restart_cb, &sup.redis);
    if (conf.redis_url[0] == '\0') {
        char *dir = state_path(state, "redis");
        bool made = mkdirs(dir, 0700, &err);
        free(dir);
        if (!made)
            goto out;
        if (strlen(state) + sizeof "/redis.sock" > 100) {
            buf_printf(&err, "state_dir %s is too long for a unix socket path", state);
            goto out;
        }
        snprintf(sup.redis_sock, sizeof sup.redis_sock, "%.*s/redis.sock", 90, state);
        redis_argv(&sup, state, &sup.redis);
        if (!spawn(&sup.redis) || !redis_wait_ready(&sup, &err))
            goto out;
        extra = xrealloc(extra, (nextra + 1) * sizeof *extra);
        struct buf url = BUF_INIT;
        buf_printf(&url, "unix:%s", sup.redis_sock);
        extra[nextra++] = override("redis.url", buf_cstr(&url));
        buf_release(&url);
    }

    static const char *const role_names[] = { "edge", "relay", "bridge" };
    sup.nroles = sizeof role_names / sizeof role_names[0];
    sup.roles = xcalloc(sup.nroles, sizeof *sup.roles);
    char self[PATH_MAX];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        buf_printf(&err, "cannot find my own executable: %s", strerror(errno));
        goto out;
    }
    self[sl] = '\0';
    for (size_t i = 0; i < sup.nroles; i++) {
        struct child *c = &sup.roles[i];
        size_t n = 0;
        c->name = role_names[i];
        c->sup = &sup;
        c->restart = evtimer_new(sup.base, restart_cb, c);
        argv_push(&c->argv, &n, self);
        if (a->conf_file != NULL) {
            argv_push(&c->argv, &n, "-c");
            argv_push(&c->argv, &n, a->conf_file);
        }
        for (size_t j = 0; j < a->noverrides; j++) {
            argv_push(&c->argv, &n, "-o");
            argv_push(&c->argv, &n, a->overrides[j]);
        }
        for (size_t j = 0; j < nextra; j++) {
            argv_push(&c->argv, &n, "-o");
            argv_push(&c->argv, &n, extra[j]);
        }
        argv_push(&c->argv, &n, c->name);
    }

    sup.sigterm = evsignal_new(sup.base, SIGTERM, stop_cb, &sup);
    sup.sigint = evsignal_new(sup.base, SIGINT, stop_cb, &sup);
    sup.sigchld = evsignal_new(sup.base, SIGCHLD, sigchld_cb, &sup);
    sup.stop_timer = evtimer_new(sup.base, stop_timer_cb, &sup);
    evsignal_add(sup.sigterm, NULL);
    evsignal_add(sup.sigint, NULL);
    evsignal_add(sup.sigchld, NULL);
    for (size_t i = 0; i < sup.nroles; i++)
        spawn(&sup.roles[i]);
    print_summary(&sup);
    event_base_dispatch(sup.base);
    log_msg(LOG_INFO, "stopped", NULL, "mxgate stopped");
    rc = 0;
out:
    if (err.len > 0)
        log_msg(LOG_CRIT, "start-failed", NULL, "%s", buf_cstr(&err));
    if (rc != 0 && sup.redis.pid != 0) {
        kill(sup.redis.pid, SIGTERM);
        waitpid(sup.redis.pid, NULL, 0);
    }
    buf_release(&err);
    for (size_t i = 0; i < sup.nroles; i++) {
        argv_free(sup.roles[i].argv);
        if (sup.roles[i].restart)
            event_free(sup.roles[i].restart);
    }
    free(sup.roles);
    argv_free(sup.redis.argv);
    if (sup.redis.restart)
        event_free(sup.redis.restart);
    for (size_t i = 0; i < nextra; i++)
        free(extra[i]);
    free(extra);
    if (sup.sigterm) {
        event_free(sup.sigterm);
        event_free(sup.sigint);
        event_free(sup.sigchld);
        event_free(sup.stop_timer);
    }
    if (sup.base)
        event_base_free(sup.base);
    if (lockfd >= 0)
        close(lockfd);
    return rc;
}
