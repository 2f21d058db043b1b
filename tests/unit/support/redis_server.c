/*
 * redis_server.c - test support: a private redis-server (see redis_server.h).
 */
#include "redis_server.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "buf.h"
#include "redis.h"

char trs_dir[64];
char trs_sock[128];
pid_t trs_pid = -1;

long long trs_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void trs_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

bool trs_answers(void)
{
    struct timeval tv = { 0, 200000 };
    redisContext *c = redisConnectUnixWithTimeout(trs_sock, tv);
    bool ok = false;
    if (c != NULL && c->err == 0) {
        redisReply *r = redisCommand(c, "PING");
        ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r != NULL)
            freeReplyObject(r);
    }
    redisFree(c);
    return ok;
}

static void cleanup(void)
{
    if (trs_pid > 0) {
        kill(trs_pid, SIGKILL);
        waitpid(trs_pid, NULL, 0);
        trs_pid = -1;
    }
    if (trs_dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", trs_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", trs_dir);
        trs_dir[0] = '\0';
    }
}

void trs_start(void)
{
    if (trs_dir[0] == '\0') {
        strcpy(trs_dir, "/tmp/mxg-redis-XXXXXX");
        assert_non_null(mkdtemp(trs_dir));
        atexit(cleanup);
        snprintf(trs_sock, sizeof trs_sock, "%s/redis.sock", trs_dir);
    }
    char out[160];
    snprintf(out, sizeof out, "%s/redis.out", trs_dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", trs_sock,
               "--dir", trs_dir, "--appendonly", "yes", "--appendfsync", "always",
               "--no-appendfsync-on-rewrite", "no", "--maxmemory-policy", "noeviction",
               "--save", "", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    trs_pid = pid;
    long long end = trs_mono_ms() + 5000;
    while (!trs_answers()) {
        assert_true(trs_mono_ms() < end);
        trs_sleep_ms(10);
    }
}

void trs_stop(void)
{
    if (trs_pid <= 0)
        return;
    kill(trs_pid, SIGCONT);
    kill(trs_pid, SIGTERM);
    waitpid(trs_pid, NULL, 0);
    trs_pid = -1;
}

redisContext *trs_sync(void)
{
    struct redis_target t = { .path = trs_sock };
    struct buf err = BUF_INIT;
    redisContext *c = redis_connect_sync(&t, 2000, &err);
    if (c == NULL)
        fail_msg("redis_connect_sync: %s", buf_cstr(&err));
    buf_release(&err);
    return c;
}

bool trs_run_until(struct event_base *base, bool (*pred)(void *), void *arg, long long ms)
{
    long long end = trs_mono_ms() + ms;
    while (!pred(arg) && trs_mono_ms() < end) {
        struct timeval tv = { 0, 10000 };
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return pred(arg);
}
