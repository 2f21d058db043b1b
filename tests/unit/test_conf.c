/*
 * test_conf.c - unit tests of the settings table and the configuration parser (lib/conf.c).
 *
 * Table-driven: good values of every type and suffix, bad values with their exact error text and
 * line number, file syntax (comments, continuation lines, CRLF), -o overrides, reloads, the
 * cross-field rules, and the generated reference and sample. Configuration files are written into
 * a mkdtemp directory that the group teardown removes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "conf.h"

static char tmpdir[] = "/tmp/mxgate-test-conf-XXXXXX";
static char conf_path[sizeof tmpdir + 32];
static struct buf shown;    /* value_of()'s result */

static int group_setup(void **state)
{
    (void)state;
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(conf_path, sizeof conf_path, "%s/mxgate.conf", tmpdir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(conf_path);
    rmdir(tmpdir);
    conf_free();
    buf_release(&shown);
    return 0;
}

/* Writes len bytes of text as the test configuration file. */
static void write_conf_n(const char *text, size_t len)
{
    FILE *fp = fopen(conf_path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void write_conf(const char *text)
{
    write_conf_n(text, strlen(text));
}

/* Expected error text with every "{F}" replaced by the test file's path. */
static char *expand(const char *tmpl)
{
    struct buf b = BUF_INIT;
    for (const char *p = tmpl; *p != '\0';) {
        if (strncmp(p, "{F}", 3) == 0) {
            buf_puts(&b, conf_path);
            p += 3;
        } else {
            buf_putc(&b, *p++);
        }
    }
    return buf_steal(&b);
}

/* The current value of key in file syntax; valid until the next call. */
static const char *value_of(const char *key)
{
    const struct conf_row *r = conf_find(key);
    assert_non_null(r);
    buf_reset(&shown);
    conf_format_value(r, &shown);
    return buf_cstr(&shown);
}

static long long *num_field(const char *key)
{
    const struct conf_row *r = conf_find(key);
    assert_non_null(r);
    return (long long *)((char *)&conf + r->offset);
}

static void test_defaults(void **state)
{
    (void)state;
    struct buf errs = BUF_INIT;
    assert_true(conf_load(NULL, NULL, 0, &errs));
    assert_string_equal(buf_cstr(&errs), "");
    buf_release(&errs);

    assert_string_equal(conf.state_dir, "./var");
    assert_string_equal(conf.log_level, "info");
    assert_string_equal(conf.redis_url, "");
    assert_string_equal(conf.redis_server, "redis-server");
    assert_string_equal(conf.redis_prefix, "mxg");
    assert_int_equal(conf.redis_timeout, 5000);
    assert_int_equal(conf.edge_listen.n, 1);
    assert_string_equal(conf.edge_listen.v[0], "127.0.0.1:2525");
    assert_int_equal(conf.edge_submission_listen.n, 1);
    assert_string_equal(conf.edge_submission_listen.v[0], "127.0.0.1:2587");
    assert_int_equal(conf.edge_smtps_listen.n, 0);
    assert_string_equal(conf.edge_hostname, "");
    assert_string_equal(conf.edge_banner, "ESMTP mxgate");
    assert_int_equal(conf.local_domains.n, 1);
    assert_string_equal(conf.local_domains.v[0], "example.test");
    assert_string_equal(conf.local_recipients, "");
    assert_int_equal(conf.edge_trusted_networks.n, 0);
    assert_string_equal(conf.edge_auth_users, "");
    assert_string_equal(conf.tls_cert, "");
    assert_string_equal(conf.tls_key, "");
    assert_int_equal(conf.dns_servers.n, 0);
    assert_string_equal(conf.admin_listen, "127.0.0.1:8025");
    assert_int_equal(conf.edge_max_command_line, 512);
    assert_int_equal(conf.edge_max_line_length, 1000);
    assert_int_equal(conf.edge_max_local_part, 64);
    assert_int_equal(conf.edge_max_domain, 255);
    assert_int_equal(conf.edge_max_path, 256);
    assert_int_equal(conf.edge_max_recipients, 1000);
    assert_int_equal(conf.edge_max_messages, 100);
    assert_int_equal(conf.edge_message_size_limit, 35LL * 1024 * 1024);
    assert_int_equal(conf.edge_max_connections, 10000);
    assert_int_equal(conf.edge_max_connections_per_ip, 50);
    assert_int_equal(conf.edge_idle_timeout, 300000);
    assert_int_equal(conf.edge_data_timeout, 600000);
    assert_int_equal(conf.edge_min_data_rate, 500);
    assert_int_equal(conf.edge_soft_error_limit, 10);
    assert_int_equal(conf.edge_hard_error_limit, 20);
    assert_int_equal(conf.edge_error_sleep, 1000);
    assert_int_equal(conf.screen_greet_wait, 6000);
    assert_int_equal(conf.edge_bare_newline, BARE_NEWLINE_NORMALIZE);
    assert_string_equal(conf.relay_helo_name, "");
    assert_string_equal(conf.relay_smarthost, "");
    assert_int_equal(conf.relay_mx_port, 25);
    assert_int_equal(conf.relay_tls, RELAY_TLS_MAY);
    assert_string_equal(conf.relay_retry_schedule, "5*1m, 5*10m, 6*1h, 4h");
    assert_int_equal(conf.relay_retry_jitter, 20);
    assert_int_equal(conf.relay_max_age, 5LL * 86400 * 1000);
    assert_int_equal(conf.relay_max_attempts, 0);
    assert_int_equal(conf.relay_max_inflight, 500);
    assert_int_equal(conf.relay_lease, 30LL * 60 * 1000);
    assert_int_equal(conf.relay_poll, 500);
    assert_string_equal(conf.relay_failed_repository, "remote-delivery/permanent");
    assert_int_equal(conf.relay_connect_timeout, 30000);
    assert_int_equal(conf.relay_command_timeout, 300000);
    assert_int_equal(conf.relay_data_timeout, 180000);
    assert_int_equal(conf.relay_final_timeout, 600000);
    assert_int_equal(conf.dns_timeout, 5000);
    assert_int_equal(conf.relay_destination_concurrency, 20);
    assert_int_equal(conf.relay_rate_limit, 0);
    assert_int_equal(conf.relay_concurrency_limit, 0);
    assert_int_equal(conf.relay_domain_limits.n, 0);
    assert_int_equal(conf.relay_throttle_scope, THROTTLE_SHARED);
    assert_string_equal(conf.relay_temporary_repository, "");
    assert_int_equal(conf.relay_delay_warning, 0);
    assert_int_equal(conf.relay_domain_tls.n, 0);
    assert_string_equal(conf.bridge_lmtp, "");
    assert_int_equal(conf.relay_mx_limits.n, 0);
}

/* Every default parses, lies within its row's bounds, and is already in canonical form. */
static void test_rows(void **state)
{
    (void)state;
    struct buf errs = BUF_INIT;
    assert_true(conf_load(NULL, NULL, 0, &errs));
    buf_release(&errs);
    assert_int_equal(conf_nrows, 100);
    for (size_t i = 0; i < conf_nrows; i++) {
        const struct conf_row *r = &conf_rows[i];
        assert_ptr_equal(conf_find(r->name), r);
        assert_non_null(r->help);
        assert_true(strlen(r->help) > 10);
        assert_null(strchr(r->help, '\n'));
        long long v = 0;
        switch (r->type) {
        case CONF_INT:
            v = strtoll(r->def, NULL, 10);
            break;
        case CONF_SIZE:
            assert_true(conf_parse_size(r->def, &v));
            break;
        case CONF_DURATION:
            assert_true(conf_parse_duration(r->def, &v));
            break;
        default:
            break;
        }
        if (r->type == CONF_INT || r->type == CONF_SIZE || r->type == CONF_DURATION) {
            assert_true(r->min <= r->max);
            assert_true(v >= r->min && v <= r->max);     /* signed: some minimums are negative */
            assert_int_equal(*num_field(r->name), v);
        }
        if (r->type == CONF_ENUM)
            assert_non_null(r->choices);
        assert_string_equal(value_of(r->name), r->def);
    }
    assert_null(conf_find("edge.lissten"));
    assert_null(conf_find("EDGE.LISTEN"));
}

struct good_case {
    const char *key;
    const char *value;      /* as written in the file */
    const char *shown;      /* conf_format_value afterwards */
    long long num;          /* stored number for INT, SIZE (bytes), DURATION (ms); else ignored */
};

static const struct good_case good_cases[] = {
    { "edge.idle_timeout", "300", "5m", 300000 },
    { "edge.idle_timeout", "300s", "5m", 300000 },
    { "edge.idle_timeout", "90s", "90s", 90000 },
    { "edge.idle_timeout", "5m", "5m", 300000 },
    { "edge.idle_timeout", "10S", "10s", 10000 },
    { "edge.idle_timeout", "1h", "1h", 3600000 },
    { "edge.idle_timeout", "1500ms", "1500ms", 1500 },
    { "edge.idle_timeout", "60m", "1h", 3600000 },
    { "edge.data_timeout", "2h", "2h", 7200000 },
    { "edge.data_timeout", "1d", "1d", 86400000 },
    { "edge.data_timeout", "1440m", "1d", 86400000 },
    { "edge.data_timeout", "3M", "3m", 180000 },
    { "redis.timeout", "250ms", "250ms", 250 },
    { "redis.timeout", "100ms", "100ms", 100 },
    { "redis.timeout", "2000MS", "2s", 2000 },
    { "edge.error_sleep", "0", "0s", 0 },
    { "screen.greet_wait", "1m", "1m", 60000 },
    { "edge.message_size_limit", "1024", "1k", 1024 },
    { "edge.message_size_limit", "10k", "10k", 10240 },
    { "edge.message_size_limit", "10K", "10k", 10240 },
    { "edge.message_size_limit", "64kb", "64k", 65536 },
    { "edge.message_size_limit", "35M", "35M", 36700160 },
    { "edge.message_size_limit", "35MB", "35M", 36700160 },
    { "edge.message_size_limit", "35mb", "35M", 36700160 },
    { "edge.message_size_limit", "2G", "2G", 2147483648LL },
    { "edge.message_size_limit", "1gB", "1G", 1073741824 },
    { "edge.message_size_limit", "2048M", "2G", 2147483648LL },
    { "edge.message_size_limit", "100000", "100000", 100000 },
    { "edge.message_size_limit", "5000b", "5000", 5000 },
    { "edge.min_data_rate", "0", "0", 0 },
    { "edge.min_data_rate", "1G", "1G", 1073741824 },
    { "edge.max_recipients", "1", "1", 1 },
    { "edge.max_recipients", "100000", "100000", 100000 },
    { "edge.max_recipients", "0100", "100", 100 },
    { "edge.max_connections_per_ip", "0", "0", 0 },
    { "edge.max_command_line", "65536", "65536", 65536 },
    { "edge.bare_newline", "reject", "reject", 0 },
    { "edge.bare_newline", "REJECT", "reject", 0 },
    { "edge.bare_newline", "normalize", "normalize", 0 },
    { "log.level", "debug", "debug", 0 },
    { "log.level", "WARN", "warn", 0 },
    { "log.level", "crit", "crit", 0 },
    { "edge.banner", "Hello there  world", "Hello there  world", 0 },
    { "edge.banner", "", "", 0 },
    { "edge.hostname", "mx1.example.com", "mx1.example.com", 0 },
    { "redis.url", "unix:/run/redis.sock", "unix:/run/redis.sock", 0 },
    { "admin.listen", "[::1]:8025", "[::1]:8025", 0 },
    { "local.domains", "a.example, b.example c.example,,d.example",
      "a.example, b.example, c.example, d.example", 0 },
    { "local.domains", "", "", 0 },
    { "edge.listen", "", "", 0 },
    { "edge.listen", "*:25 [::1]:2525, 127.0.0.1:25", "*:25, [::1]:2525, 127.0.0.1:25", 0 },
    { "edge.listen", "localhost:25", "localhost:25", 0 },
    { "edge.trusted_networks", "10.0.0.0/8, 192.0.2.1 2001:db8::/32,[::1]/128",
      "10.0.0.0/8, 192.0.2.1, 2001:db8::/32, [::1]/128", 0 },
    { "dns.servers", "192.0.2.53, 192.0.2.54:5353 [2001:db8::53]:53 ::1",
      "192.0.2.53, 192.0.2.54:5353, [2001:db8::53]:53, ::1", 0 },
};

static void test_good_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
        const struct good_case *c = &good_cases[i];
        char text[512];
        snprintf(text, sizeof text, "# case %zu\n%s = %s\n", i, c->key, c->value);
        write_conf(text);
        struct buf errs = BUF_INIT;
        bool ok = conf_load(conf_path, NULL, 0, &errs);
        if (!ok)
            print_error("case %zu (%s = %s): %s", i, c->key, c->value, buf_cstr(&errs));
        assert_true(ok);
        assert_string_equal(buf_cstr(&errs), "");
        buf_release(&errs);
        assert_string_equal(value_of(c->key), c->shown);
        enum conf_type t = conf_find(c->key)->type;
        if (t == CONF_INT || t == CONF_SIZE || t == CONF_DURATION)
            assert_int_equal(*num_field(c->key), c->num);
    }
    write_conf("edge.bare_newline = reject\n");
    struct buf errs = BUF_INIT;
    assert_true(conf_load(conf_path, NULL, 0, &errs));
    assert_int_equal(conf.edge_bare_newline, BARE_NEWLINE_REJECT);
    buf_release(&errs);
}

struct bad_case {
    const char *text;       /* the file */
    const char *errs;       /* every error line, "{F}" = the file's path */
};

static const struct bad_case bad_cases[] = {
    { "edge.lissten = 127.0.0.1:25\n", "{F}:1: unknown key 'edge.lissten'\n" },
    { "\n# comment\nedge.max_recipients = 0\n",
      "{F}:3: edge.max_recipients: '0' is below the minimum 1\n" },
    { "edge.max_recipients = 100001\n",
      "{F}:1: edge.max_recipients: '100001' is above the maximum 100000\n" },
    { "edge.max_recipients = -5\n", "{F}:1: edge.max_recipients: '-5' is below the minimum 1\n" },
    { "edge.max_recipients = 1.5\n", "{F}:1: edge.max_recipients: '1.5' is not an integer\n" },
    { "edge.max_recipients = +5\n", "{F}:1: edge.max_recipients: '+5' is not an integer\n" },
    { "edge.max_recipients = 10k\n", "{F}:1: edge.max_recipients: '10k' is not an integer\n" },
    { "edge.max_recipients =\n", "{F}:1: edge.max_recipients: '' is not an integer\n" },
    { "edge.max_recipients = 99999999999999999999\n",
      "{F}:1: edge.max_recipients: '99999999999999999999' is out of range\n" },
    { "edge.idle_timeout = abc\n", "{F}:1: edge.idle_timeout: 'abc' is not a duration\n" },
    { "edge.idle_timeout = 5 m\n", "{F}:1: edge.idle_timeout: '5 m' is not a duration\n" },
    { "edge.idle_timeout = 5w\n", "{F}:1: edge.idle_timeout: '5w' is not a duration\n" },
    { "edge.idle_timeout = -5s\n", "{F}:1: edge.idle_timeout: '-5s' is not a duration\n" },
    { "edge.idle_timeout = 1.5s\n", "{F}:1: edge.idle_timeout: '1.5s' is not a duration\n" },
    { "edge.idle_timeout = 0\n", "{F}:1: edge.idle_timeout: '0' is below the minimum 1s\n" },
    { "edge.idle_timeout = 999ms\n", "{F}:1: edge.idle_timeout: '999ms' is below the minimum 1s\n" },
    { "edge.idle_timeout = 61m\n", "{F}:1: edge.idle_timeout: '61m' is above the maximum 1h\n" },
    { "redis.timeout = 99ms\n", "{F}:1: redis.timeout: '99ms' is below the minimum 100ms\n" },
    { "edge.data_timeout = 9999999999999999d\n",
      "{F}:1: edge.data_timeout: '9999999999999999d' is out of range\n" },
    { "edge.message_size_limit = 35X\n",
      "{F}:1: edge.message_size_limit: '35X' is not a size\n" },
    { "edge.message_size_limit = M\n", "{F}:1: edge.message_size_limit: 'M' is not a size\n" },
    { "edge.message_size_limit = 3G\n",
      "{F}:1: edge.message_size_limit: '3G' is above the maximum 2G\n" },
    { "edge.message_size_limit = 1023\n",
      "{F}:1: edge.message_size_limit: '1023' is below the minimum 1k\n" },
    { "edge.message_size_limit = 99999999999G\n",
      "{F}:1: edge.message_size_limit: '99999999999G' is out of range\n" },
    { "edge.bare_newline = strip\n",
      "{F}:1: edge.bare_newline: 'strip' is not one of normalize|reject\n" },
    { "edge.bare_newline =\n", "{F}:1: edge.bare_newline: '' is not one of normalize|reject\n" },
    { "log.level = verbose\n",
      "{F}:1: log.level: 'verbose' is not one of debug|info|warn|error|crit\n" },
    { "edge.listen = 127.0.0.1:2525\nedge.banner = x\nedge.listen = 127.0.0.1:2526\n",
      "{F}:3: 'edge.listen' is set twice (first at line 1)\n" },
    { "just garbage\n", "{F}:1: line is not 'key = value'\n" },
    { "= value\n", "{F}:1: line is not 'key = value'\n" },
    { "edge listen = 127.0.0.1:25\n", "{F}:1: line is not 'key = value'\n" },
    { "  edge.listen = 127.0.0.1:25\n",
      "{F}:1: continuation line has no 'key = value' line before it\n" },
    { "edge.x\x01\xff = 1\n", "{F}:1: unknown key 'edge.x\\x01\\xff'\n" },
    { "edge.trusted_networks = 10.0.0.0/8 10.0.0.0/33\n",
      "{F}:1: edge.trusted_networks: '10.0.0.0/33' is not a network (address or address/prefix)\n" },
    { "edge.listen = 127.0.0.1\n", "{F}:1: edge.listen: '127.0.0.1' is not host:port\n" },
    { "edge.submission_listen = :587\n",
      "{F}:1: edge.submission_listen: ':587' is not host:port\n" },
    { "edge.smtps_listen = [::1]:99999\n",
      "{F}:1: edge.smtps_listen: '[::1]:99999' is not host:port\n" },
    { "admin.listen = localhost\n", "{F}:1: admin.listen: 'localhost' is not host:port\n" },
    { "dns.servers = dns.example\n", "{F}:1: dns.servers: 'dns.example' is not ip or ip:port\n" },
    /* Every error is reported, each with its own line, and the good lines between still apply. */
    { "edge.max_recipients = 0\n"
      "edge.banner = fine\n"
      "edge.lissten = x\n"
      "edge.idle_timeout = soon\n"
      "edge.max_messages = 7\n"
      "edge.max_messages = 8\n",
      "{F}:1: edge.max_recipients: '0' is below the minimum 1\n"
      "{F}:3: unknown key 'edge.lissten'\n"
      "{F}:4: edge.idle_timeout: 'soon' is not a duration\n"
      "{F}:6: 'edge.max_messages' is set twice (first at line 5)\n" },
    /* A continued line is reported at its first line; the next key keeps its own number. */
    { "edge.max_recipients =\n  0\n\nedge.max_messages = x\n",
      "{F}:1: edge.max_recipients: '0' is below the minimum 1\n"
      "{F}:4: edge.max_messages: 'x' is not an integer\n" },
    { "edge.soft_error_limit = 30\n",
      "{F}: edge.soft_error_limit (30) is above edge.hard_error_limit (20)\n" },
    { "edge.soft_error_limit = 5\nedge.hard_error_limit = 4\n",
      "{F}: edge.soft_error_limit (5) is above edge.hard_error_limit (4)\n" },
    { "tls.cert = /etc/ssl/mx.pem\n",
      "{F}: tls.cert and tls.key must be set together (tls.key is empty)\n" },
    { "tls.key = /etc/ssl/mx.key\n",
      "{F}: tls.cert and tls.key must be set together (tls.cert is empty)\n" },
};

static void test_bad_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        write_conf(bad_cases[i].text);
        struct buf errs = BUF_INIT;
        char *want = expand(bad_cases[i].errs);
        bool ok = conf_load(conf_path, NULL, 0, &errs);
        if (ok || strcmp(buf_cstr(&errs), want) != 0)
            print_error("case %zu: got [%s] want [%s]", i, buf_cstr(&errs), want);
        assert_false(ok);
        assert_string_equal(buf_cstr(&errs), want);
        free(want);
        buf_release(&errs);
    }
}

/* A rejected value leaves the default in place, and a good line after it still applies. */
static void test_bad_value_keeps_default(void **state)
{
    (void)state;
    write_conf("edge.max_recipients = 0\nedge.listen = nope\nedge.max_messages = 7\n"
               "local.domains = a.example\n");
    struct buf errs = BUF_INIT;
    assert_false(conf_load(conf_path, NULL, 0, &errs));
    assert_int_equal(conf.edge_max_recipients, 1000);
    assert_int_equal(conf.edge_listen.n, 1);
    assert_string_equal(conf.edge_listen.v[0], "127.0.0.1:2525");
    assert_int_equal(conf.edge_max_messages, 7);
    assert_string_equal(conf.local_domains.v[0], "a.example");
    buf_release(&errs);
    /* A NULL error buffer is allowed: the caller only wants the verdict. */
    assert_false(conf_load(conf_path, NULL, 0, NULL));
}

static void test_nul_byte(void **state)
{
    (void)state;
    static const char text[] = "edge.banner = a\0b\nedge.max_messages = 9\n";
    write_conf_n(text, sizeof text - 1);
    struct buf errs = BUF_INIT;
    char *want = expand("{F}:1: line contains a NUL byte\n");
    assert_false(conf_load(conf_path, NULL, 0, &errs));
    assert_string_equal(buf_cstr(&errs), want);
    assert_int_equal(conf.edge_max_messages, 9);
    assert_string_equal(conf.edge_banner, "ESMTP mxgate");
    free(want);
    buf_release(&errs);
}

static void test_file_syntax(void **state)
{
    (void)state;
    write_conf("# mxgate\n"
               "   # an indented comment\n"
               "\n"
               "edge.listen = 127.0.0.1:25,\n"
               "    127.0.0.2:25\n"
               "\t[::1]:25\n"
               "edge.banner = Welcome\n"
               "# a comment inside a continued value\n"
               "  to   the gate\n"
               "\n"
               "local.domains=a.example\r\n"
               "edge.hostname   =   mx.example   \n"
               "edge.max_messages = 5");      /* no final newline */
    struct buf errs = BUF_INIT;
    assert_true(conf_load(conf_path, NULL, 0, &errs));
    assert_string_equal(buf_cstr(&errs), "");
    assert_int_equal(conf.edge_listen.n, 3);
    assert_string_equal(conf.edge_listen.v[0], "127.0.0.1:25");
    assert_string_equal(conf.edge_listen.v[1], "127.0.0.2:25");
    assert_string_equal(conf.edge_listen.v[2], "[::1]:25");
    assert_string_equal(conf.edge_banner, "Welcome to   the gate");
    assert_int_equal(conf.local_domains.n, 1);
    assert_string_equal(conf.local_domains.v[0], "a.example");
    assert_string_equal(conf.edge_hostname, "mx.example");
    assert_int_equal(conf.edge_max_messages, 5);
    buf_release(&errs);

    write_conf("");
    assert_true(conf_load(conf_path, NULL, 0, &errs));
    assert_string_equal(buf_cstr(&errs), "");
    buf_release(&errs);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct buf errs = BUF_INIT;
    char path[sizeof tmpdir + 32];
    snprintf(path, sizeof path, "%s/absent.conf", tmpdir);
    assert_false(conf_load(path, NULL, 0, &errs));
    struct buf want = BUF_INIT;
    buf_printf(&want, "%s: cannot read: No such file or directory\n", path);
    assert_string_equal(buf_cstr(&errs), buf_cstr(&want));
    assert_string_equal(conf.edge_banner, "ESMTP mxgate");

    buf_reset(&errs);
    buf_reset(&want);
    assert_false(conf_load(tmpdir, NULL, 0, &errs));
    buf_printf(&want, "%s: cannot read: Is a directory\n", tmpdir);
    assert_string_equal(buf_cstr(&errs), buf_cstr(&want));
    buf_release(&want);
    buf_release(&errs);
}

struct override_case {
    const char *file;       /* NULL = no file */
    const char *o[3];       /* up to three -o arguments */
    bool ok;
    const char *errs;
    const char *key;        /* checked afterwards, when not NULL */
    const char *shown;
};

static const struct override_case override_cases[] = {
    { "edge.max_recipients = 200\n", { "edge.max_recipients=300" }, true, "",
      "edge.max_recipients", "300" },
    { NULL, { "edge.max_recipients=300", "edge.max_recipients=400" }, true, "",
      "edge.max_recipients", "400" },
    { NULL, { "edge.banner = Hi there " }, true, "", "edge.banner", "Hi there" },
    { NULL, { "edge.banner=" }, true, "", "edge.banner", "" },
    { NULL, { "edge.banner=a=b" }, true, "", "edge.banner", "a=b" },
    { NULL, { "edge.listen=127.0.0.1:25,127.0.0.1:26" }, true, "",
      "edge.listen", "127.0.0.1:25, 127.0.0.1:26" },
    { NULL, { "x=1" }, false, "-o: unknown key 'x'\n", NULL, NULL },
    { NULL, { "foo" }, false, "-o: 'foo' is not key=value\n", NULL, NULL },
    { NULL, { "=5" }, false, "-o: '=5' is not key=value\n", NULL, NULL },
    { NULL, { "edge.max_recipients=0" }, false,
      "-o: edge.max_recipients: '0' is below the minimum 1\n", "edge.max_recipients", "1000" },
    { NULL, { "edge.soft_error_limit=30" }, false,
      "-o: edge.soft_error_limit (30) is above edge.hard_error_limit (20)\n", NULL, NULL },
    { "edge.soft_error_limit = 30\n", { "edge.hard_error_limit=40" }, true, "",
      "edge.soft_error_limit", "30" },
    { "tls.cert = /c.pem\n", { "tls.key=/k.pem" }, true, "", "tls.key", "/k.pem" },
    { "edge.lissten = 1\n", { "edge.max_messages=0", "edge.max_messages=3" }, false,
      "{F}:1: unknown key 'edge.lissten'\n-o: edge.max_messages: '0' is below the minimum 1\n",
      "edge.max_messages", "3" },
};

static void test_overrides(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof override_cases / sizeof override_cases[0]; i++) {
        const struct override_case *c = &override_cases[i];
        size_t n = 0;
        while (n < 3 && c->o[n] != NULL)
            n++;
        if (c->file != NULL)
            write_conf(c->file);
        struct buf errs = BUF_INIT;
        char *want = expand(c->errs);
        bool ok = conf_load(c->file != NULL ? conf_path : NULL, (char *const *)c->o, n, &errs);
        if (ok != c->ok || strcmp(buf_cstr(&errs), want) != 0)
            print_error("case %zu: got [%s] want [%s]", i, buf_cstr(&errs), want);
        assert_int_equal(ok, c->ok);
        assert_string_equal(buf_cstr(&errs), want);
        if (c->key != NULL)
            assert_string_equal(value_of(c->key), c->shown);
        free(want);
        buf_release(&errs);
    }
}

/* A second load starts from the defaults again and frees what the first one set. */
static void test_reload(void **state)
{
    (void)state;
    struct buf errs = BUF_INIT;
    write_conf("edge.banner = first\nlocal.domains = a.example b.example\nedge.max_messages = 7\n"
               "tls.cert = /c\ntls.key = /k\nlog.level = debug\n");
    char *o[] = { "edge.listen = 127.0.0.1:1 127.0.0.1:2" };
    assert_true(conf_load(conf_path, o, 1, &errs));
    assert_string_equal(conf.edge_banner, "first");
    assert_int_equal(conf.local_domains.n, 2);
    assert_int_equal(conf.edge_listen.n, 2);

    write_conf("edge.hostname = second\n");
    assert_true(conf_load(conf_path, NULL, 0, &errs));
    assert_string_equal(buf_cstr(&errs), "");
    assert_string_equal(conf.edge_hostname, "second");
    assert_string_equal(conf.edge_banner, "ESMTP mxgate");
    assert_int_equal(conf.local_domains.n, 1);
    assert_string_equal(conf.local_domains.v[0], "example.test");
    assert_int_equal(conf.edge_listen.n, 1);
    assert_int_equal(conf.edge_max_messages, 100);
    assert_string_equal(conf.tls_cert, "");
    assert_string_equal(conf.log_level, "info");

    conf_free();
    assert_null(conf.edge_banner);
    assert_int_equal(conf.edge_listen.n, 0);
    conf_free();        /* twice is harmless */
    assert_true(conf_load(NULL, NULL, 0, &errs));
    assert_string_equal(conf.edge_banner, "ESMTP mxgate");
    buf_release(&errs);
}

struct parse_case {
    const char *s;
    bool ok;
    long long v;
};

static void test_value_parsers(void **state)
{
    (void)state;
    static const struct parse_case durations[] = {
        { "0", true, 0 }, { "300", true, 300000 }, { "300s", true, 300000 }, { "5m", true, 300000 },
        { "2h", true, 7200000 }, { "1d", true, 86400000 }, { "250ms", true, 250 },
        { "7D", true, 604800000 }, { "", false, 0 }, { "s", false, 0 }, { "5mm", false, 0 },
        { " 5s", false, 0 }, { "5s ", false, 0 }, { "-1s", false, 0 }, { "1e3", false, 0 },
        { "9223372036854775807ms", true, 9223372036854775807LL },
        { "9223372036854775807s", false, 0 }, { "99999999999999999999", false, 0 },
    };
    static const struct parse_case sizes[] = {
        { "0", true, 0 }, { "1024", true, 1024 }, { "10k", true, 10240 }, { "10K", true, 10240 },
        { "10kB", true, 10240 }, { "35M", true, 36700160 }, { "35MB", true, 36700160 },
        { "2G", true, 2147483648LL }, { "2gb", true, 2147483648LL }, { "7b", true, 7 },
        { "", false, 0 }, { "k", false, 0 }, { "1T", false, 0 }, { "1.5M", false, 0 },
        { "-1", false, 0 }, { "10 k", false, 0 }, { "8589934591G", true, 8589934591LL << 30 },
        { "8589934592G", false, 0 },
    };
    static const struct { const char *s; bool ok, v; } bools[] = {
        { "yes", true, true }, { "no", true, false }, { "true", true, true },
        { "false", true, false }, { "on", true, true }, { "off", true, false },
        { "1", true, true }, { "0", true, false }, { "YES", true, true }, { "Off", true, false },
        { "", false, false }, { "2", false, false }, { "y", false, false }, { "nope", false, false },
    };
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        long long v = -1;
        assert_int_equal(conf_parse_duration(durations[i].s, &v), durations[i].ok);
        if (durations[i].ok)
            assert_int_equal(v, durations[i].v);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        long long v = -1;
        assert_int_equal(conf_parse_size(sizes[i].s, &v), sizes[i].ok);
        if (sizes[i].ok)
            assert_int_equal(v, sizes[i].v);
    }
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
        bool v = !bools[i].v;
        assert_int_equal(conf_parse_bool(bools[i].s, &v), bools[i].ok);
        if (bools[i].ok)
            assert_int_equal(v, bools[i].v);
    }
}

static void test_strlist(void **state)
{
    (void)state;
    char *o[] = { "local.domains = Example.TEST, other.example" };
    struct buf errs = BUF_INIT;
    assert_true(conf_load(NULL, o, 1, &errs));
    assert_true(strlist_contains_ci(&conf.local_domains, "example.test"));
    assert_true(strlist_contains_ci(&conf.local_domains, "OTHER.example"));
    assert_false(strlist_contains_ci(&conf.local_domains, "example"));
    assert_false(strlist_contains_ci(&conf.edge_smtps_listen, "x"));
    strlist_free(NULL);
    buf_release(&errs);
}

static void test_reference(void **state)
{
    (void)state;
    struct buf a = BUF_INIT, b = BUF_INIT;
    conf_write_reference(&a);
    conf_write_reference(&b);
    assert_string_equal(buf_cstr(&a), buf_cstr(&b));
    const char *doc = buf_cstr(&a);
    assert_true(strncmp(doc, "# Configuration reference\n\n", 27) == 0);
    assert_non_null(strstr(doc, "-o key=value"));
    assert_non_null(strstr(doc, "mxgate config check [FILE]"));
    static const char *const groups[] = {
        "general", "log", "redis", "edge", "local", "tls", "dns", "admin",
    };
    const char *prev = doc;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        char h[64];
        snprintf(h, sizeof h, "\n## %s\n", groups[i]);
        const char *at = strstr(doc, h);
        assert_non_null(at);
        assert_true(at > prev);
        assert_null(strstr(at + 1, h));     /* one section per group */
        prev = at;
    }
    for (size_t i = 0; i < conf_nrows; i++) {
        char h[128];
        snprintf(h, sizeof h, "\n### `%s`\n", conf_rows[i].name);
        assert_non_null(strstr(doc, h));
        assert_non_null(strstr(doc, conf_rows[i].help));
    }
    assert_non_null(strstr(doc,
        "\n### `edge.idle_timeout`\n\n"
        "Type: duration; default: `5m`; range: 1s to 1h; reloadable: yes.\n\n"
        "Time to wait for the client's next command before closing the connection.\n"));
    assert_non_null(strstr(doc,
        "\n### `tls.cert`\n\nType: string; default: (empty); reloadable: yes.\n"));
    assert_non_null(strstr(doc,
        "\n### `edge.message_size_limit`\n\n"
        "Type: size; default: `35M`; range: 1k to 2G; reloadable: yes.\n"));
    assert_non_null(strstr(doc,
        "\n### `edge.bare_newline`\n\n"
        "Type: choice; default: `normalize`; one of: `normalize|reject`; reloadable: yes.\n"));
    assert_non_null(strstr(doc,
        "\n### `edge.listen`\n\nType: list; default: `127.0.0.1:2525`; reloadable: no.\n"));
    buf_release(&a);
    buf_release(&b);
}

/* The sample shows every key with its help, and uncommenting every setting changes nothing. */
static void test_sample(void **state)
{
    (void)state;
    struct buf s = BUF_INIT;
    conf_write_sample(&s);
    const char *text = buf_cstr(&s);
    assert_true(strncmp(text, "# mxgate configuration file.\n", 29) == 0);
    for (size_t i = 0; i < conf_nrows; i++) {
        const struct conf_row *r = &conf_rows[i];
        struct buf want = BUF_INIT;
        buf_printf(&want, "# %s\n#%s =%s%s\n", r->help, r->name, r->def[0] ? " " : "", r->def);
        assert_non_null(strstr(text, buf_cstr(&want)));
        buf_release(&want);
    }
    assert_non_null(strstr(text, "\n#screen.greet_wait = 6s\n"));
    assert_non_null(strstr(text, "\n#tls.cert =\n"));

    struct buf uncommented = BUF_INIT;
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) + 1 : strlen(p);
        bool setting = p[0] == '#' && p[1] != ' ' && p[1] != '\n' && memchr(p, '=', n) != NULL;
        if (setting)
            buf_append(&uncommented, p + 1, n - 1);
        else
            buf_append(&uncommented, p, n);
        p += n;
    }
    write_conf(buf_cstr(&uncommented));
    struct buf errs = BUF_INIT;
    assert_true(conf_load(conf_path, NULL, 0, &errs));
    assert_string_equal(buf_cstr(&errs), "");
    for (size_t i = 0; i < conf_nrows; i++)
        assert_string_equal(value_of(conf_rows[i].name), conf_rows[i].def);
    /* Every key was set once: setting any of them again is reported as a repeat. */
    buf_puts(&uncommented, "edge.banner = again\n");
    write_conf(buf_cstr(&uncommented));
    assert_false(conf_load(conf_path, NULL, 0, &errs));
    assert_non_null(strstr(buf_cstr(&errs), ": 'edge.banner' is set twice (first at line "));
    buf_release(&errs);
    buf_release(&uncommented);
    buf_release(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_good_values),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_value_keeps_default),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_file_syntax),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_value_parsers),
        cmocka_unit_test(test_strlist),
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_sample),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
