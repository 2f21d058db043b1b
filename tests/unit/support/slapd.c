/*
 * slapd.c - test support: a private slapd (slapd.h).
 *
 * How slapd runs here (Debian 12, OpenLDAP 2.5): a plain slapd.conf given with -f is enough; no
 * cn=config directory is needed. slapd runs as the user who starts it: as root no -u/-g is given
 * (-u openldap would need the directory chowned to openldap, and gains nothing in a test), and as
 * an unprivileged user it works the same on a port above 1023. -d 0 keeps it in the foreground
 * with no debug output, so the pid fork() returns is slapd's own. slapadd loads the entries into
 * the mdb directory before slapd starts (no server needed, no bind). SIGTERM stops it cleanly; the
 * listener uses SO_REUSEADDR, so it can start again on the same port at once.
 *
 * The scripted server (tsl_peer_*) speaks just enough BER to tell requests apart and to answer
 * them; it runs on the test's loop, so a test drives client and server from one thread.
 */
#include "slapd.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <ldap.h>

#include "clock.h"
#include "peer.h"

char tsl_dir[64];
char tsl_uri[64];
char tsl_ldapi_uri[160];
int tsl_port;
pid_t tsl_pid = -1;

static const char tsl_ldif[] =
    "dn: dc=example,dc=test\n"
    "objectClass: dcObject\nobjectClass: organization\ndc: example\no: example\n\n"
    "dn: ou=people,dc=example,dc=test\nobjectClass: organizationalUnit\nou: people\n\n"
    "dn: ou=staff,dc=example,dc=test\nobjectClass: organizationalUnit\nou: staff\n\n"
    "dn: uid=bob,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: B\n"
    "mail: bob@example.test\ndescription: 100%\n\n"
    "dn: uid=carol,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: carol\ncn: Carol\nsn: C\n"
    "mail: carol@example.test\n\n"
    "dn: uid=ab,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: ab\ncn: Ab\nsn: A\n"
    "mail: ab@example.test\n\n"
    "dn: uid=paren,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: paren\ncn: Paren\nsn: P\n"
    "mail: pa(r)en*x@example.test\n\n"
    "dn: uid=bs,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: bs\ncn: Bs\nsn: S\n"
    "mail: back\\slash@example.test\n\n"
    "dn: uid=dave,ou=staff,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave\nsn: D\n"
    "mail: dave@example.test\n";

/* Runs argv in the child with output appended to DIR/slapd.out (die with the test). */
static pid_t tsl_spawn(char *const argv[])
{
    char out[128];
    snprintf(out, sizeof out, "%s/slapd.out", tsl_dir);
    return tp_spawn(argv, out, NULL);
}

/* Whether slapd answers an anonymous base search of the suffix (a blocking client: tests only). */
static bool tsl_answers(void *arg)
{
    (void)arg;
    LDAP *ld = NULL;
    if (ldap_initialize(&ld, tsl_uri) != LDAP_SUCCESS)
        return false;
    int version = LDAP_VERSION3;
    struct timeval tv = { 0, 300000 };
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    struct berval none = { 0, NULL };
    bool ok = false;
    if (ldap_sasl_bind_s(ld, "", LDAP_SASL_SIMPLE, &none, NULL, NULL, NULL) == LDAP_SUCCESS) {
        LDAPMessage *res = NULL;
        char *attrs[] = { LDAP_NO_ATTRS, NULL };
        ok = ldap_search_ext_s(ld, TSL_BASE, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL, NULL, &tv,
                               1, &res) == LDAP_SUCCESS;
        ldap_msgfree(res);
    }
    ldap_unbind_ext(ld, NULL, NULL);
    return ok;
}

static void tsl_cleanup(void)
{
    tp_cleanup(&tsl_pid, tsl_dir);
}

/* The first start: the directory, slapd.conf, the data (slapadd) and the ldapi uri. */
static void tsl_prepare(void)
{
    strcpy(tsl_dir, "/tmp/mxg-slapd-XXXXXX");
    assert_non_null(mkdtemp(tsl_dir));
    atexit(tsl_cleanup);
    char db[96];
    snprintf(db, sizeof db, "%s/db", tsl_dir);
    assert_int_equal(mkdir(db, 0700), 0);
    char conf[2048];
    snprintf(conf, sizeof conf,
             "include /etc/ldap/schema/core.schema\n"
             "include /etc/ldap/schema/cosine.schema\n"
             "include /etc/ldap/schema/inetorgperson.schema\n"
             "modulepath /usr/lib/ldap\n"
             "moduleload back_mdb\n"
             "pidfile %s/slapd.pid\n"
             "argsfile %s/slapd.args\n"
             "database mdb\n"
             "maxsize 16777216\n"
             "suffix \"" TSL_BASE "\"\n"
             "rootdn \"" TSL_ROOT_DN "\"\n"
             "rootpw " TSL_ROOT_PW "\n"
             "directory %s\n"
             "index mail,uid eq\n"
             "access to dn.subtree=\"ou=staff," TSL_BASE "\" by users read by * none\n"
             "access to * by * read\n",
             tsl_dir, tsl_dir, db);
    tp_write_file(tsl_dir, "slapd.conf", conf, strlen(conf));
    tp_write_file(tsl_dir, "data.ldif", tsl_ldif, sizeof tsl_ldif - 1);
    char conf_path[96], ldif_path[96];
    snprintf(conf_path, sizeof conf_path, "%s/slapd.conf", tsl_dir);
    snprintf(ldif_path, sizeof ldif_path, "%s/data.ldif", tsl_dir);
    char *const add[] = { "/usr/sbin/slapadd", "-q", "-f", conf_path, "-l", ldif_path, NULL };
    int status = 0;
    waitpid(tsl_spawn(add), &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("slapadd failed (see %s/slapd.out)", tsl_dir);
    /* ldapi:// takes the socket path %-encoded; mkdtemp names need only '/' encoded. */
    struct buf u = BUF_INIT;
    buf_puts(&u, "ldapi://");
    for (const char *s = tsl_dir; *s != '\0'; s++) {
        if (*s == '/')
            buf_puts(&u, "%2F");
        else
            buf_putc(&u, *s);
    }
    buf_puts(&u, "%2Fldapi");
    assert_true(u.len < sizeof tsl_ldapi_uri);
    memcpy(tsl_ldapi_uri, u.data, u.len + 1);
    buf_release(&u);
}

/* Starts slapd on tsl_port; false when it exits at once (the port was taken meanwhile). */
static bool tsl_run(void)
{
    char conf_path[96], listen[256];
    snprintf(conf_path, sizeof conf_path, "%s/slapd.conf", tsl_dir);
    snprintf(tsl_uri, sizeof tsl_uri, "ldap://127.0.0.1:%d/", tsl_port);
    snprintf(listen, sizeof listen, "%s %s", tsl_uri, tsl_ldapi_uri);
    char *const argv[] = { "/usr/sbin/slapd", "-d", "0", "-f", conf_path, "-h", listen, NULL };
    tsl_pid = tsl_spawn(argv);
    switch (tp_wait_ready(tsl_pid, tsl_answers, NULL, 10000, NULL)) {
    case TP_READY:
        return true;
    case TP_EXITED:
        tsl_pid = -1;
        return false;
    case TP_TIMEOUT:
        break;
    }
    tsl_stop();
    fail_msg("slapd did not answer within 10 s (see %s/slapd.out)", tsl_dir);
    return false;
}

int tsl_start(void)
{
    if (tsl_pid > 0)
        return tsl_port;
    if (tsl_dir[0] == '\0') {
        tsl_prepare();
        for (int attempt = 0; attempt < 5; attempt++) {
            tsl_port = tp_free_port();
            if (tsl_run())
                return tsl_port;
        }
        fail_msg("slapd did not start (see %s/slapd.out)", tsl_dir);
    }
    /* Again on the same port: a client that had connected must find it there. */
    long long end = clock_mono_ms() + 5000;
    while (!tsl_run()) {
        if (clock_mono_ms() >= end)
            fail_msg("slapd did not start again on port %d (see %s/slapd.out)", tsl_port, tsl_dir);
        tp_sleep_ms(100);
    }
    return tsl_port;
}

void tsl_stop(void)
{
    if (tsl_pid <= 0)
        return;
    kill(tsl_pid, SIGTERM);
    long long end = clock_mono_ms() + 5000;
    while (waitpid(tsl_pid, NULL, WNOHANG) != tsl_pid) {
        if (clock_mono_ms() >= end) {
            tp_kill_wait(tsl_pid, SIGKILL);
            break;
        }
        tp_sleep_ms(10);
    }
    tsl_pid = -1;
}

/* ---- the scripted server ---- */

static void tsl_put_len(struct buf *b, size_t n)
{
    assert_true(n < 128);       /* short lengths are all these messages need */
    buf_putc(b, (char)n);
}

/* Appends a primitive element: tag, short length, the bytes of text. */
static void tsl_put_text(struct buf *b, unsigned char tag, const char *text)
{
    buf_putc(b, (char)tag);
    tsl_put_len(b, strlen(text));
    buf_puts(b, text);
}

/* Writes one LDAPMessage: SEQUENCE { messageID, [APPLICATION op] body }. */
static void tsl_peer_send(int fd, int id, unsigned char op, const void *body, size_t n)
{
    assert_true(id >= 0 && id < 128);
    struct buf m = BUF_INIT;
    buf_putc(&m, 0x30);
    tsl_put_len(&m, 3 + 2 + n);
    buf_append(&m, (char[]){ 0x02, 0x01, (char)id }, 3);
    buf_putc(&m, (char)op);
    tsl_put_len(&m, n);
    buf_append(&m, body, n);
    assert_int_equal(write(fd, m.data, m.len), (ssize_t)m.len);
    buf_release(&m);
}

/* LDAPResult body: resultCode, matchedDN "", diagnosticMessage text. */
static void tsl_ldap_result_body(struct buf *b, int code, const char *text)
{
    buf_append(b, (char[]){ 0x0a, 0x01, (char)code, 0x04, 0x00 }, 5);
    tsl_put_text(b, 0x04, text);
}

/* A search's answer: a reference and an entry first if asked, then searchResDone (or half of one). */
static void tsl_peer_reply(int fd, int id, bool entry, bool reference, bool malformed, int code,
                           const char *text)
{
    if (reference) {
        static const char url[] = "ldap://127.0.0.1:1/dc=example,dc=test";
        struct buf e = BUF_INIT;
        tsl_put_text(&e, 0x04, url);
        tsl_peer_send(fd, id, 0x73, e.data, e.len);
        buf_release(&e);
    }
    if (malformed) {
        tsl_peer_send(fd, id, 0x65, (char[]){ 0x0a, 0x01, (char)code }, 3);
        return;
    }
    if (entry) {
        static const char dn[] = "uid=x,dc=example,dc=test";
        struct buf e = BUF_INIT;
        tsl_put_text(&e, 0x04, dn);
        buf_append(&e, (char[]){ 0x30, 0x00 }, 2);
        tsl_peer_send(fd, id, 0x64, e.data, e.len);
        buf_release(&e);
    }
    struct buf d = BUF_INIT;
    tsl_ldap_result_body(&d, code, text);
    tsl_peer_send(fd, id, 0x65, d.data, d.len);
    buf_release(&d);
}

static void tsl_peer_conn_close(struct tsl_peer_conn *c)
{
    if (c->fd < 0)
        return;
    event_free(c->ev);
    close(c->fd);
    c->fd = -1;
    buf_release(&c->in);
}

/* Takes one whole request off c->in: its id and operation tag; false when none is complete. */
static bool tsl_peer_take(struct tsl_peer_conn *c, int *id, unsigned char *op, bool *yes, bool *never)
{
    const unsigned char *p = (const unsigned char *)c->in.data;
    size_t n = c->in.len;
    if (n < 2)
        return false;
    assert_int_equal(p[0], 0x30);
    size_t len, hdr;
    if (p[1] < 0x80) {
        len = p[1];
        hdr = 2;
    } else {
        size_t nb = p[1] & 0x7f;
        if (n < 2 + nb)
            return false;
        len = 0;
        for (size_t i = 0; i < nb; i++)
            len = len << 8 | p[2 + i];
        hdr = 2 + nb;
    }
    if (n < hdr + len)
        return false;
    const unsigned char *m = p + hdr;
    assert_int_equal(m[0], 0x02);
    int v = 0;
    for (size_t i = 0; i < m[1]; i++)
        v = v << 8 | m[2 + i];
    *id = v;
    *op = m[2 + m[1]];
    *yes = memmem(m, len, "yes", 3) != NULL;
    *never = memmem(m, len, "never", 5) != NULL;
    buf_consume(&c->in, hdr + len);
    return true;
}

static void tsl_peer_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct tsl_peer_conn *c = arg;
    struct tsl_peer *pe = c->peer;
    char tmp[4096];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r <= 0) {
        pe->closed++;
        tsl_peer_conn_close(c);
        return;
    }
    if (pe->mode == TSL_PEER_SILENT)
        return;
    buf_append(&c->in, tmp, (size_t)r);
    int id;
    unsigned char op;
    bool yes, never;
    while (c->fd >= 0 && tsl_peer_take(c, &id, &op, &yes, &never)) {
        if (op == 0x60) {               /* BindRequest: anyone may bind */
            struct buf b = BUF_INIT;
            tsl_ldap_result_body(&b, 0, "");
            tsl_peer_send(c->fd, id, 0x61, b.data, b.len);
            buf_release(&b);
            if (pe->mode == TSL_PEER_NO_READ) {
                event_del(c->ev);
                return;
            }
        } else if (op == 0x50) {        /* AbandonRequest */
            pe->abandons++;
        } else if (op == 0x42) {        /* UnbindRequest */
            pe->unbinds++;
        } else if (op == 0x63) {        /* SearchRequest */
            pe->searches++;
            switch (pe->mode) {
            case TSL_PEER_SCRIPT:
                if (!never)
                    tsl_peer_reply(c->fd, id, pe->entry, pe->reference, pe->malformed, pe->code, pe->text);
                break;
            case TSL_PEER_REVERSE:
                assert_true(pe->nheld < 64);
                pe->held_ids[pe->nheld] = id;
                pe->held_yes[pe->nheld++] = yes;
                if (pe->nheld == pe->hold_n)
                    while (pe->nheld > 0) {
                        pe->nheld--;
                        tsl_peer_reply(c->fd, pe->held_ids[pe->nheld], pe->held_yes[pe->nheld], false, false,
                                       0, "");
                    }
                break;
            case TSL_PEER_NOTICE: {
                static const char oid[] = "1.3.6.1.4.1.1466.20036";
                struct buf b = BUF_INIT;
                /*
                 * No diagnosticMessage: libldap 2.5 decodes that of an unsolicited message into a
                 * request record on its stack and never frees it (try_read1msg, dummy_lr), which
                 * LeakSanitizer reports; the code is what matters here.
                 */
                tsl_ldap_result_body(&b, 52, "");
                tsl_put_text(&b, 0x8a, oid);
                tsl_peer_send(c->fd, 0, 0x78, b.data, b.len);
                buf_release(&b);
                tsl_peer_conn_close(c);
                break;
            }
            case TSL_PEER_GARBAGE:
                assert_int_equal(write(c->fd, "\x04\x03" "abc", 5), 5);   /* whole, but no LDAPMessage */
                break;
            default:
                break;
            }
        }
    }
}

static void tsl_peer_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct tsl_peer *pe = arg;
    int cfd = accept(fd, NULL, NULL);
    if (cfd < 0)
        return;
    assert_true(pe->nconns < 8);
    struct tsl_peer_conn *c = &pe->conns[pe->nconns++];
    c->peer = pe;
    c->fd = cfd;
    buf_init(&c->in);
    c->ev = event_new(pe->base, cfd, EV_READ | EV_PERSIST, tsl_peer_read, c);
    assert_int_equal(event_add(c->ev, NULL), 0);
}

void tsl_peer_start(struct tsl_peer *pe, struct event_base *base, enum tsl_peer_mode mode)
{
    memset(pe, 0, sizeof *pe);
    pe->base = base;
    pe->mode = mode;
    pe->text = "";
    pe->filler = -1;
    /* NO_READ: a small receive buffer, which accepted sockets inherit, piles the requests up sooner */
    pe->lfd = tp_tcp_listen(16, mode == TSL_PEER_NO_READ ? 4096 : 0, &pe->port);
    snprintf(pe->uri, sizeof pe->uri, "ldap://127.0.0.1:%d/", pe->port);
    pe->lev = event_new(pe->base, pe->lfd, EV_READ | EV_PERSIST, tsl_peer_accept, pe);
    assert_int_equal(event_add(pe->lev, NULL), 0);
}

void tsl_peer_block_accepts(struct tsl_peer *pe)
{
    event_del(pe->lev);
    assert_int_equal(listen(pe->lfd, 0), 0);
    pe->filler = tp_connect(&(struct tp_target){ .port = pe->port });
    assert_true(pe->filler >= 0);
}

void tsl_peer_allow_accepts(struct tsl_peer *pe)
{
    assert_int_equal(listen(pe->lfd, 16), 0);
    assert_int_equal(event_add(pe->lev, NULL), 0);
}

void tsl_peer_stop(struct tsl_peer *pe)
{
    for (int i = 0; i < pe->nconns; i++)
        tsl_peer_conn_close(&pe->conns[i]);
    event_free(pe->lev);
    close(pe->lfd);
    if (pe->filler >= 0)
        close(pe->filler);
}
