/*
 * test_netaddr.c - unit tests of listener specs, printable addresses and listening sockets
 * (lib/netaddr.c), table-driven. Sockets are opened on loopback port 0 only; the IPv6 rows are
 * skipped, with a message, on a machine without an IPv6 loopback.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "netaddr.h"

struct split_case {
    const char *spec;
    int defport;
    bool ok;
    const char *host;
    int port;
};

static const struct split_case split_cases[] = {
    { "127.0.0.1:2525", 0, true, "127.0.0.1", 2525 },
    { "127.0.0.1", 25, true, "127.0.0.1", 25 },
    { "mx.example:587", 25, true, "mx.example", 587 },
    { "mx.example", 25, true, "mx.example", 25 },
    { "[::1]:2525", 0, true, "::1", 2525 },
    { "[::1]", 53, true, "::1", 53 },
    { "[2001:db8::1]:65535", 0, true, "2001:db8::1", 65535 },
    { "::1", 53, true, "::1", 53 },
    { "2001:db8::53", 53, true, "2001:db8::53", 53 },
    { "*:25", 0, true, "*", 25 },
    { ":25", 0, true, "", 25 },
    { "host:0", 1, true, "host", 0 },
    { "host:", 25, false, NULL, 0 },
    { "host:65536", 25, false, NULL, 0 },
    { "host:123456", 25, false, NULL, 0 },
    { "host:-1", 25, false, NULL, 0 },
    { "host:+25", 25, false, NULL, 0 },
    { "host:25x", 25, false, NULL, 0 },
    { "host: 25", 25, false, NULL, 0 },
    { "[::1", 25, false, NULL, 0 },
    { "[::1]25", 25, false, NULL, 0 },
    { "[::1]:", 25, false, NULL, 0 },
    { "[127.0.0.1]:25", 25, false, NULL, 0 },
    { "[mx.example]:25", 25, false, NULL, 0 },
    { "[]:25", 25, false, NULL, 0 },
};

static void test_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof split_cases / sizeof split_cases[0]; i++) {
        const struct split_case *c = &split_cases[i];
        char *host = NULL;
        int port = -7;
        bool ok = netaddr_split(c->spec, &host, &port, c->defport);
        if (ok != c->ok)
            print_error("case %zu '%s': got %d\n", i, c->spec, ok);
        assert_int_equal(ok, c->ok);
        if (ok) {
            assert_string_equal(host, c->host);
            assert_int_equal(port, c->port);
            free(host);
        } else {
            assert_null(host);
            assert_int_equal(port, -7);
        }
    }
}

struct listen_case {
    const char *spec;
    bool ok;
    const char *result;     /* addresses joined with ", ", or the error text */
};

static const struct listen_case listen_cases[] = {
    { "127.0.0.1:2525", true, "127.0.0.1:2525" },
    { "[::1]:2525", true, "[::1]:2525" },
    { "*:25", true, "0.0.0.0:25, [::]:25" },
    { "0.0.0.0:25", true, "0.0.0.0:25" },
    { "[::]:25", true, "[::]:25" },
    { "[2001:db8::0:1]:465", true, "[2001:db8::1]:465" },
    { "127.0.0.1", false, "bad listen address '127.0.0.1': a port from 1 to 65535 is required" },
    { "127.0.0.1:0", false, "bad listen address '127.0.0.1:0': a port from 1 to 65535 is required" },
    { "*", false, "bad listen address '*': a port from 1 to 65535 is required" },
    { "::1", false, "bad listen address '::1': a port from 1 to 65535 is required" },
    { "127.0.0.1:65536", false,
      "bad listen address '127.0.0.1:65536': expected host:port, [ipv6]:port or *:port" },
    { "[127.0.0.1]:25", false,
      "bad listen address '[127.0.0.1]:25': expected host:port, [ipv6]:port or *:port" },
    { "[::1:25", false, "bad listen address '[::1:25': expected host:port, [ipv6]:port or *:port" },
    { "host:smtp", false,
      "bad listen address 'host:smtp': expected host:port, [ipv6]:port or *:port" },
    { ":25", false, "bad listen address ':25': missing host (use *:port for every address)" },
    { "\x01:25", false, "cannot resolve listen address '\\x01:25': " },
};

static void test_parse_listen(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof listen_cases / sizeof listen_cases[0]; i++) {
        const struct listen_case *c = &listen_cases[i];
        struct netaddr *v = NULL;
        size_t n = 0;
        struct buf err = BUF_INIT;
        bool ok = netaddr_parse_listen(c->spec, &v, &n, &err);
        if (ok != c->ok)
            print_error("case %zu '%s': got %d (%s)\n", i, c->spec, ok, buf_cstr(&err));
        assert_int_equal(ok, c->ok);
        if (ok) {
            struct buf got = BUF_INIT;
            for (size_t j = 0; j < n; j++) {
                char s[NETADDR_STRLEN];
                netaddr_string((struct sockaddr *)&v[j].ss, s, sizeof s);
                buf_printf(&got, "%s%s", j > 0 ? ", " : "", s);
                assert_int_equal(v[j].len, v[j].ss.ss_family == AF_INET
                                 ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
            }
            assert_string_equal(buf_cstr(&got), c->result);
            assert_string_equal(buf_cstr(&err), "");
            buf_release(&got);
        } else if (strstr(c->result, "cannot resolve") != NULL) {
            /* The resolver's own words vary; the part naming the spec does not. */
            assert_true(strncmp(buf_cstr(&err), c->result, strlen(c->result)) == 0);
            assert_true(err.len > strlen(c->result));
            assert_int_equal(n, 0);
        } else {
            assert_string_equal(buf_cstr(&err), c->result);
            assert_int_equal(n, 0);
        }
        free(v);
        buf_release(&err);
    }
}

/* Several specs append to one array; a name is resolved to every address it has. */
static void test_parse_listen_append(void **state)
{
    (void)state;
    struct netaddr *v = NULL;
    size_t n = 0;
    struct buf err = BUF_INIT;
    assert_true(netaddr_parse_listen("127.0.0.1:1", &v, &n, &err));
    assert_true(netaddr_parse_listen("localhost:2", &v, &n, &err));
    assert_true(n >= 2);
    char s[NETADDR_STRLEN];
    netaddr_string((struct sockaddr *)&v[0].ss, s, sizeof s);
    assert_string_equal(s, "127.0.0.1:1");
    bool have_v4 = false;
    for (size_t i = 1; i < n; i++) {
        netaddr_string((struct sockaddr *)&v[i].ss, s, sizeof s);
        have_v4 |= strcmp(s, "127.0.0.1:2") == 0;
        assert_true(strcmp(s, "127.0.0.1:2") == 0 || strcmp(s, "[::1]:2") == 0);
        for (size_t j = 1; j < i; j++)
            assert_false(v[j].len == v[i].len && memcmp(&v[j].ss, &v[i].ss, v[i].len) == 0);
    }
    assert_true(have_v4);
    free(v);
    buf_release(&err);
}

struct string_case {
    const char *ip;
    int port;
    const char *ip_string;
    const char *string;
};

static const struct string_case string_cases[] = {
    { "192.0.2.1", 25, "192.0.2.1", "192.0.2.1:25" },
    { "0.0.0.0", 0, "0.0.0.0", "0.0.0.0:0" },
    { "2001:db8::1", 587, "2001:db8::1", "[2001:db8::1]:587" },
    { "2001:0db8:0000:0000:0000:0000:0000:0001", 1, "2001:db8::1", "[2001:db8::1]:1" },
    { "::", 25, "::", "[::]:25" },
    { "::ffff:192.0.2.1", 465, "192.0.2.1", "192.0.2.1:465" },
    { "::192.0.2.1", 465, "::192.0.2.1", "[::192.0.2.1]:465" },
    { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
      "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535" },
};

static void test_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof string_cases / sizeof string_cases[0]; i++) {
        const struct string_case *c = &string_cases[i];
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, c->ip, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)c->port);
        } else {
            assert_int_equal(inet_pton(AF_INET6, c->ip, &sin6->sin6_addr), 1);
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons((uint16_t)c->port);
        }
        char out[NETADDR_STRLEN];
        netaddr_ip_string((struct sockaddr *)&ss, out, sizeof out);
        assert_string_equal(out, c->ip_string);
        netaddr_string((struct sockaddr *)&ss, out, sizeof out);
        assert_string_equal(out, c->string);
    }

    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, "/run/mxgate.sock");
    char out[NETADDR_STRLEN];
    netaddr_string((struct sockaddr *)&sun, out, sizeof out);
    assert_string_equal(out, "unix:/run/mxgate.sock");

    /* A short output buffer truncates and stays NUL-terminated. */
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(25) };
    inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
    char small[8];
    netaddr_string((struct sockaddr *)&sin, small, sizeof small);
    assert_string_equal(small, "192.0.2");
}

/* Whether this machine can bind the IPv6 loopback. */
static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    bool ok = bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
    close(fd);
    return ok;
}

static void make_addr(const char *ip, int port, struct netaddr *a)
{
    memset(a, 0, sizeof *a);
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        a->len = sizeof *sin;
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        a->len = sizeof *sin6;
    }
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

struct sock_case {
    const char *ip;         /* bound on port 0, then again on the port it got */
    bool v6;
    const char *busy;       /* the second bind's error, %d = the port */
};

static const struct sock_case sock_cases[] = {
    { "127.0.0.1", false, "cannot listen on 127.0.0.1:%d: Address already in use" },
    { "::1", true, "cannot listen on [::1]:%d: Address already in use" },
};

static void test_listen(void **state)
{
    (void)state;
    bool v6 = have_ipv6_loopback();
    for (size_t i = 0; i < sizeof sock_cases / sizeof sock_cases[0]; i++) {
        const struct sock_case *c = &sock_cases[i];
        if (c->v6 && !v6) {
            print_message("skipping [%s]:0: this machine has no IPv6 loopback\n", c->ip);
            continue;
        }
        struct netaddr a;
        struct buf err = BUF_INIT;
        make_addr(c->ip, 0, &a);
        int fd = netaddr_listen(&a, 16, &err);
        if (fd < 0)
            print_error("%s: %s\n", c->ip, buf_cstr(&err));
        assert_true(fd >= 0);
        assert_string_equal(buf_cstr(&err), "");
        assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        int on = 0;
        socklen_t len = sizeof on;
        assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, &len), 0);
        assert_int_equal(on, 1);
        len = sizeof on;
        assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len), 0);
        assert_int_equal(on, 1);
        if (c->v6) {
            len = sizeof on;
            assert_int_equal(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, &len), 0);
            assert_int_equal(on, 1);
        }
        int port = bound_port(fd);
        assert_true(port > 0);

        struct netaddr again;
        make_addr(c->ip, port, &again);
        assert_int_equal(netaddr_listen(&again, 16, &err), -1);
        char want[128];
        snprintf(want, sizeof want, c->busy, port);
        assert_string_equal(buf_cstr(&err), want);
        close(fd);
        buf_release(&err);
    }
}

/* "*:port": the IPv4 and IPv6 wildcards share a port because the IPv6 socket is V6ONLY. */
static void test_listen_wildcards(void **state)
{
    (void)state;
    if (!have_ipv6_loopback()) {
        print_message("skipping *:port: this machine has no IPv6\n");
        return;
    }
    struct netaddr a4;
    struct buf err = BUF_INIT;
    make_addr("0.0.0.0", 0, &a4);
    int fd4 = netaddr_listen(&a4, 16, &err);
    assert_true(fd4 >= 0);
    char spec[32];
    snprintf(spec, sizeof spec, "*:%d", bound_port(fd4));
    close(fd4);

    struct netaddr *v = NULL;
    size_t n = 0;
    assert_true(netaddr_parse_listen(spec, &v, &n, &err));
    assert_int_equal(n, 2);
    int fds[2];
    for (size_t i = 0; i < n; i++) {
        fds[i] = netaddr_listen(&v[i], 16, &err);
        if (fds[i] < 0)
            print_error("%s\n", buf_cstr(&err));
        assert_true(fds[i] >= 0);
    }
    close(fds[0]);
    close(fds[1]);
    free(v);
    buf_release(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_parse_listen),
        cmocka_unit_test(test_parse_listen_append),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_listen_wildcards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
