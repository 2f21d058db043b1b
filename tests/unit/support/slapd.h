/*
 * slapd.h - test support: LDAP servers for unit tests. A private OpenLDAP slapd, and a scripted
 * fake LDAP server on the test's own libevent loop for what slapd will not do on demand (answer
 * late, never, out of order, with a given result code, garbage, or a Notice of Disconnection).
 *
 * tsl_start() makes a mkdtemp directory (first call), writes a slapd.conf there (back_mdb from
 * /usr/lib/ldap, suffix TSL_BASE, rootdn TSL_ROOT_DN / TSL_ROOT_PW), loads the entries listed
 * below with slapadd, and runs /usr/sbin/slapd in the foreground (-d 0, so the test owns its pid)
 * on ldap://127.0.0.1:PORT/ (a free port) and on ldapi:// in the directory. It returns once an
 * anonymous search answers. tsl_stop() ends it by its pid; a later tsl_start() runs it again on
 * the same port with the same data. slapd is killed and the directory removed at exit (atexit,
 * and PR_SET_PDEATHSIG should the test die). Failures fail the running test.
 *
 * Entries (objectClass inetOrgPerson, uid = the RDN):
 *   ou=people: bob (mail bob@example.test, description "100%"), carol (carol@example.test),
 *              ab (ab@example.test), paren (pa(r)en*x@example.test), bs (back\slash@example.test)
 *   ou=staff:  dave (dave@example.test), readable only by a bound user (anonymous sees nothing)
 */
#ifndef MXG_TEST_SLAPD_H
#define MXG_TEST_SLAPD_H

#include <stdbool.h>
#include <sys/types.h>

#include "buf.h"

struct event;
struct event_base;

#define TSL_BASE    "dc=example,dc=test"
#define TSL_ROOT_DN "cn=admin,dc=example,dc=test"
#define TSL_ROOT_PW "secret-admin"

extern char tsl_dir[64];        /* the server's directory */
extern char tsl_uri[64];        /* "ldap://127.0.0.1:PORT/" once started */
extern char tsl_ldapi_uri[160]; /* "ldapi://" and the socket path, %-encoded */
extern int tsl_port;            /* PORT */
extern pid_t tsl_pid;           /* slapd's pid, -1 when stopped */

/* Starts slapd (creating and loading its directory on the first call); returns its port. */
int tsl_start(void);
/* SIGTERM, and waits for it to exit (SIGKILL after 5 s). */
void tsl_stop(void);

/*
 * The scripted server: anyone may bind (success), and each search gets what mode says. Searches
 * are told apart by their filter: one holding "yes" gets an entry (TSL_PEER_REVERSE), one holding
 * "never" no answer (TSL_PEER_SCRIPT). Requests are parsed just enough for their message id and
 * operation; answers use short BER lengths (message ids below 128). Counters tell the test what
 * the client did.
 */
enum tsl_peer_mode {
    TSL_PEER_SILENT,        /* accepts and never answers, not even the bind */
    TSL_PEER_NO_SEARCH,     /* answers the bind, never a search */
    TSL_PEER_SCRIPT,        /* answers each search with code / entry / text, except those for "never" */
    TSL_PEER_REVERSE,       /* holds search answers until hold_n searches came, then answers newest first */
    TSL_PEER_NOTICE,        /* the first search gets a Notice of Disconnection, then the connection closes */
    TSL_PEER_GARBAGE,       /* the first search gets a BER element that is not an LDAPMessage */
    TSL_PEER_NO_READ,       /* answers the bind, then stops reading (a small receive buffer) */
};

struct tsl_peer_conn {
    struct tsl_peer *peer;
    int fd;                     /* -1 once closed */
    struct event *ev;
    struct buf in;              /* bytes not yet read as whole requests */
};

struct tsl_peer {
    struct event_base *base;    /* the test's loop (not owned) */
    enum tsl_peer_mode mode;
    int code;                   /* TSL_PEER_SCRIPT: the searchResDone result code */
    bool entry;                 /* TSL_PEER_SCRIPT: send one entry first */
    bool reference;             /* TSL_PEER_SCRIPT: send a search reference first */
    bool malformed;             /* TSL_PEER_SCRIPT: searchResDone without its last two fields */
    const char *text;           /* TSL_PEER_SCRIPT: its diagnosticMessage */
    int hold_n;                 /* TSL_PEER_REVERSE */
    char uri[64];               /* "ldap://127.0.0.1:PORT/" */
    int port;
    int lfd;                    /* the listening socket */
    int filler;                 /* a connection left in the accept queue, or -1 */
    struct event *lev;          /* accepts */
    struct tsl_peer_conn conns[8];
    int nconns;                 /* connections accepted */
    int closed;                 /* connections the client closed */
    int searches;               /* search requests seen */
    int abandons;               /* abandon requests seen */
    int unbinds;                /* unbind requests seen */
    int held_ids[64];           /* TSL_PEER_REVERSE: search ids waiting */
    bool held_yes[64];          /* ... and whether that filter holds "yes" */
    int nheld;
};


/* Listens on a free loopback port (pe->uri) and accepts on base. */
void tsl_peer_start(struct tsl_peer *pe, struct event_base *base, enum tsl_peer_mode mode);
/* Stops accepting and fills the accept queue, so that a client's connect stays in progress. */
void tsl_peer_block_accepts(struct tsl_peer *pe);
/* Accepts again (the filler first); a connect whose SYN was dropped gets in on its retry. */
void tsl_peer_allow_accepts(struct tsl_peer *pe);
/* Closes every connection and the listener. */
void tsl_peer_stop(struct tsl_peer *pe);

#endif
