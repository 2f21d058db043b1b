/*
 * peer.h - test support shared by the tests and the other support files: loopback sockets and
 * ports, child processes (real servers) that die with the test, waiting for them to answer,
 * temp trees, and running a libevent loop until something holds.
 *
 * Only 127.0.0.1 (and unix sockets) is ever used. A child started by tp_spawn() gets
 * PR_SET_PDEATHSIG, so it is killed should the test die; the caller still stops it by its pid.
 * Durations are measured with lib/clock.h's clock_mono_ms(). Failures fail the running test
 * (cmocka), except where a function says it returns them.
 */
#ifndef MXG_TEST_PEER_H
#define MXG_TEST_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>
#include <netinet/in.h>

#include <event2/listener.h>

struct buf;
struct event_base;

/* ---- sockets and ports ---- */

/* 127.0.0.1:port. */
struct sockaddr_in tp_loopback(int port);
/* A 127.0.0.1 port that nothing uses right now, for UDP and TCP alike. */
int tp_free_port(void);
/* A UDP socket bound to 127.0.0.1 on a port the kernel picks (*port); the caller closes it. */
int tp_udp_bound(int *port);
/* A TCP socket listening on 127.0.0.1 on a port the kernel picks (*port). rcvbuf > 0 sets
 * SO_RCVBUF before listen(), which accepted sockets inherit. The caller closes it. */
int tp_tcp_listen(int backlog, int rcvbuf, int *port);
/* An evconnlistener on 127.0.0.1 (a port the kernel picks, *port) accepting on base with cb;
 * LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE. evconnlistener_free() it. */
struct evconnlistener *tp_listen(struct event_base *base, evconnlistener_cb cb, void *arg, int backlog,
                                 int *port);

/* A listener whose accept queue is full: the kernel drops further SYNs, so a connect to it stays
 * in progress (until the client's own timeout). */
struct tp_full {
    int lfd;                    /* listening, backlog 0 */
    int fill[4];                /* the connections that fill its queue */
    int port;
};
void tp_full_open(struct tp_full *f);
void tp_full_close(struct tp_full *f);

/* Where a server listens: 127.0.0.1:port, or the unix socket path when path is not NULL. */
struct tp_target {
    int port;
    const char *path;
};
/* A blocking connect (test side, never the code under test); the socket, or -1 when refused. */
int tp_connect(const struct tp_target *t);
/* Whether something accepts connections at t (a struct tp_target *) now; a tp_wait_ready() probe. */
bool tp_accepts(void *t);

/* ---- processes and files ---- */

/*
 * Forks and runs argv (argv[0] looked up on PATH when it holds no '/'), standard output appended
 * to out (NULL: /dev/null) and standard error to err (NULL: the same as out), both created 0644.
 * The child dies with the test (PR_SET_PDEATHSIG). Returns its pid.
 */
pid_t tp_spawn(char *const argv[], const char *out, const char *err);
/* Sends sig to pid and waits for it to exit; pid <= 0 is left alone. */
void tp_kill_wait(pid_t pid, int sig);

enum tp_wait {
    TP_READY,                   /* ready() held */
    TP_EXITED,                  /* the process exited first (reaped) */
    TP_TIMEOUT,                 /* ms passed */
};
/* Asks ready(arg) every 10 ms for up to ms while pid runs (pid <= 0: no process to watch); when
 * pid exits it is reaped and its wait status stored in *status (unless NULL). */
enum tp_wait tp_wait_ready(pid_t pid, bool (*ready)(void *), void *arg, long long ms, int *status);

/* Runs the shell command made from fmt; fails the test unless it exits 0. */
void tp_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, returning its standard output with trailing newlines dropped; free() it. */
char *tp_sh_output(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Appends what is left of the stream f to b. */
void tp_read_stream(FILE *f, struct buf *b);
/* Writes len bytes of data into dir/name (replacing it). */
void tp_write_file(const char *dir, const char *name, const void *data, size_t len);
/* Removes path and everything below it, without following links; a missing path is no error. */
void tp_rmtree(const char *path);
/* What an exit handler does for a server and its directory: SIGKILLs *pid (when pid is not NULL
 * and *pid > 0) and waits for it, setting *pid to -1; removes the tree dir unless dir is "", then
 * empties dir. */
void tp_cleanup(pid_t *pid, char *dir);
/*
 * The cmocka group setup the suites of real peers share: log lines of the code under test go to
 * stderr, critical ones only; SIGPIPE is ignored; dir gets a new "/tmp/NAME.XXXXXX" made 0755, so
 * that daemons running as another user reach into it. 0, or -1 when the directory cannot be made.
 */
int tp_group_setup(char dir[64], const char *name);
void tp_sleep_ms(long long ms);

/* ---- the event loop ---- */

/* Runs base's loop, 5 ms at a time, until pred(arg) holds or ms have passed; returns pred(arg). */
bool tp_run_until(struct event_base *base, bool (*pred)(void *), void *arg, long long ms);
/* Runs base's loop for ms, whatever happens. */
void tp_run_for(struct event_base *base, long long ms);
/* tp_run_until *count reaches want; whether it did. */
bool tp_run_count(struct event_base *base, const int *count, int want, long long ms);
/*
 * tp_run_until each of the n records of v (size bytes apart) has a non-zero int at offset (a
 * callback counter: offsetof(struct x, calls)); returns how many have, n when all did.
 */
size_t tp_run_all(struct event_base *base, const void *v, size_t n, size_t size, size_t offset, long long ms);

#endif
