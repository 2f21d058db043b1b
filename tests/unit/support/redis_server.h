/*
 * redis_server.h - test support: a private redis-server for unit tests.
 *
 * trs_start() makes a mkdtemp directory and starts Debian's redis-server there on a unix socket
 * with the durability settings mxgate requires; the server is killed and the directory removed at
 * exit (atexit, and PR_SET_PDEATHSIG should the test die). Failures fail the running test.
 */
#ifndef MXG_TEST_REDIS_SERVER_H
#define MXG_TEST_REDIS_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

extern char trs_dir[64];        /* the server's directory */
extern char trs_sock[128];      /* its unix socket */
extern pid_t trs_pid;           /* its pid, -1 when stopped */

/* Creates the directory (first call) and starts the server; waits until it answers PING. */
void trs_start(void);
/* SIGTERM (after SIGCONT) and wait. */
void trs_stop(void);
/* Does the server answer PING now? */
bool trs_answers(void);
/* A blocking connection for checking what the server holds (fails the test if it cannot). */
redisContext *trs_sync(void);

#endif
