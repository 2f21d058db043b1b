/*
 * http_server.h - test support: real HTTP servers on loopback for clients under test.
 *
 * - Python's http.server (Debian's python3) serving a directory on a free port: HEAD and GET of
 *   files (200), missing paths (404), directories without a trailing slash (301). It decodes
 *   %XX in the path before looking at the file system. Killed at exit (atexit, and
 *   PR_SET_PDEATHSIG should the test die).
 * - An in-process peer on the test's libevent loop for what http.server cannot do: it records each
 *   request head byte for byte and answers every one with the same chosen bytes, or never.
 * Failures fail the running test.
 */
#ifndef MXG_TEST_HTTP_SERVER_H
#define MXG_TEST_HTTP_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include "buf.h"

struct bufferevent;
struct event_base;
struct evconnlistener;

#define HTTP_PY_BIN "/usr/bin/python3"

struct http_py {
    pid_t pid;                      /* -1 when stopped */
    int port;
};

/* Is python3 installed (a test that needs it skips otherwise)? */
bool http_py_available(void);
/* Starts http.server on dir and a free 127.0.0.1 port, its output to out; waits until it accepts. */
void http_py_start(struct http_py *s, const char *dir, const char *out);
/* SIGKILL and wait; a stopped server is left alone. */
void http_py_stop(struct http_py *s);

#define HTTP_PEER_MAX_CONNS 64

struct http_peer {
    struct event_base *base;        /* the loop it runs on (not owned) */
    struct evconnlistener *lis;
    int port;
    const char *reply;              /* written for each request head; NULL: never answer */
    bool close_after;               /* close once the reply is written ("" closes at once) */
    int conns;                      /* connections accepted */
    int requests;                   /* request heads read */
    struct buf head;                /* the last request head, blank line included */
    struct bufferevent *bev[HTTP_PEER_MAX_CONNS];   /* open connections */
};

/* Listens on a free 127.0.0.1 port; reply must outlive the peer. */
void http_peer_start(struct http_peer *pe, struct event_base *base, const char *reply, bool close_after);
/* Closes every connection and the listener. */
void http_peer_stop(struct http_peer *pe);

#endif
