/*
 * redis_server.c - test support: a private redis-server (see redis_server.h).
 */
#include "redis_server.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "peer.h"
#include "redis.h"

char trs_dir[64];
char trs_sock[128];
pid_t trs_pid = -1;

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
    tp_cleanup(&trs_pid, trs_dir);
}

static bool answers(void *arg)
{
    (void)arg;
    return trs_answers();
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
    char *argv[] = { "redis-server", "--port", "0", "--unixsocket", trs_sock, "--dir", trs_dir,
                     "--appendonly", "yes", "--appendfsync", "always", "--no-appendfsync-on-rewrite", "no",
                     "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no", NULL };
    trs_pid = tp_spawn(argv, out, NULL);
    enum tp_wait w = tp_wait_ready(trs_pid, answers, NULL, 5000, NULL);
    if (w == TP_EXITED)
        trs_pid = -1;
    if (w != TP_READY)
        fail_msg("redis-server did not answer PING within 5 s (see %s)", out);
}

void trs_stop(void)
{
    if (trs_pid <= 0)
        return;
    kill(trs_pid, SIGCONT);
    tp_kill_wait(trs_pid, SIGTERM);
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
