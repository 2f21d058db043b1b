/*
 * log.c - JSON-lines logger (see log.h).
 *
 * Each line is assembled in memory and written with a single write(2), so lines from the several
 * processes of one appliance sharing a stderr do not interleave (O_APPEND / pipe writes under
 * PIPE_BUF are atomic; longer ones are rare and still whole lines). Logging never fails the caller.
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_role = "mxgate";
static enum log_level log_min = LOG_INFO;
static int log_fd = 2;

static const char *const level_names[] = { "debug", "info", "warn", "error", "crit" };

/* getpid() is a system call and every line carries it; a forked child asks again. */
static _Atomic long log_pid;   /* 0: not known in this process yet */

static void forget_pid(void)
{
    log_pid = 0;
}

static void register_fork_hook(void)
{
    pthread_atfork(NULL, NULL, forget_pid);
}

static long pid_now(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (log_pid == 0) {
        pthread_once(&once, register_fork_hook);
        log_pid = getpid();
    }
    return (long)log_pid;
}

void log_init(const char *role, enum log_level min, int fd)
{
    log_role = role;
    log_min = min;
    log_fd = fd;
}

bool log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    return false;
}

const char *log_role_name(void)
{
    return log_role;
}

bool log_enabled(enum log_level level)
{
    return level >= log_min;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629), or 0 if it is not one. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned min;
    unsigned cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2, min = 0x80, cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3, min = 0x800, cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4, min = 0x10000, cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void json_escape(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    buf_reserve(b, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = u[i];
        switch (c) {
        case '"': buf_append(b, "\\\"", 2); break;
        case '\\': buf_append(b, "\\\\", 2); break;
        case '\n': buf_append(b, "\\n", 2); break;
        case '\r': buf_append(b, "\\r", 2); break;
        case '\t': buf_append(b, "\\t", 2); break;
        default:
            if (c >= 0x20 && c < 0x7f) {
                buf_putc(b, (char)c);
            } else if (c >= 0x80 && utf8_seq_len(u + i, n - i) > 0) {
                /* Well-formed UTF-8 (an SMTPUTF8 address, say) is kept as it is. */
                size_t len = utf8_seq_len(u + i, n - i);
                buf_append(b, s + i, len);
                i += len - 1;
            } else {
                /* Controls, DEL and stray bytes: escaped, so the line stays valid JSON. */
                char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
                buf_append(b, esc, 6);
            }
        }
    }
}

static void put_key(struct logrec *lr, const char *key)
{
    buf_append(&lr->line, ",\"", 2);
    buf_puts(&lr->line, key);
    buf_append(&lr->line, "\":", 2);
}

/*
 * "YYYY-MM-DDTHH:MM:SS" for a second, in UTC. Lines come many per second: the text of the last
 * second is kept (per thread, as worker threads log too).
 */
static void second_text(time_t sec, char *out, size_t size)
{
    static _Thread_local time_t last = -1;
    static _Thread_local char text[40];
    if (sec != last) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
        last = sec;
    }
    snprintf(out, size, "%s", text);
}

bool log_begin(struct logrec *lr, enum log_level level, const char *event, const struct log_ctx *ctx)
{
    if (level < log_min)
        return false;
    buf_init(&lr->line);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    char ts[40];
    second_text(tv.tv_sec, ts, sizeof ts);
    buf_printf(&lr->line, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"role\":\"%s\",\"pid\":%ld",
               ts, (long)(tv.tv_usec / 1000), level_names[level], log_role, pid_now());
    log_str(lr, "event", event);
    if (ctx != NULL) {
        if (ctx->session != NULL)
            log_str(lr, "session", ctx->session);
        if (ctx->client != NULL)
            log_str(lr, "client", ctx->client);
        if (ctx->queue_id != NULL)
            log_str(lr, "queue_id", ctx->queue_id);
        if (ctx->user != NULL)
            log_str(lr, "user", ctx->user);
    }
    return true;
}

void log_strn(struct logrec *lr, const char *key, const char *val, size_t n)
{
    put_key(lr, key);
    buf_putc(&lr->line, '"');
    json_escape(&lr->line, val, n);
    buf_putc(&lr->line, '"');
}

void log_str(struct logrec *lr, const char *key, const char *val)
{
    if (val == NULL)
        val = "";
    log_strn(lr, key, val, strlen(val));
}

void log_int(struct logrec *lr, const char *key, long long val)
{
    put_key(lr, key);
    buf_printf(&lr->line, "%lld", val);
}

void log_bool(struct logrec *lr, const char *key, bool val)
{
    put_key(lr, key);
    buf_puts(&lr->line, val ? "true" : "false");
}

void log_end(struct logrec *lr)
{
    buf_append(&lr->line, "}\n", 2);
    const char *p = lr->line.data;
    size_t left = lr->line.len;
    while (left > 0) {
        ssize_t w = write(log_fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    buf_release(&lr->line);
}

static void log_vmsg(enum log_level level, const char *event, const struct log_ctx *ctx,
                     const char *fmt, va_list ap)
{
    struct logrec lr;
    if (!log_begin(&lr, level, event, ctx))
        return;
    struct buf msg = BUF_INIT;
    buf_vprintf(&msg, fmt, ap);
    log_strn(&lr, "msg", buf_cstr(&msg), msg.len);
    buf_release(&msg);
    log_end(&lr);
}

void log_msg(enum log_level level, const char *event, const struct log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, event, ctx, fmt, ap);
    va_end(ap);
}

void log_panic(const char *fmt, ...)
{
    /* Format without allocating: this is also the out-of-memory path. */
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[1024];
    int n = snprintf(line, sizeof line,
                     "{\"level\":\"crit\",\"role\":\"%s\",\"pid\":%ld,\"event\":\"panic\",\"msg\":\"",
                     log_role, (long)getpid());
    for (const char *p = msg; *p != '\0' && n < (int)sizeof line - 4; p++)
        line[n++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? '?' : *p;
    line[n++] = '"';
    line[n++] = '}';
    line[n++] = '\n';
    if (write(log_fd, line, (size_t)n) < 0) {
        /* nothing more can be done */
    }
    abort();
}

void log_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_CRIT, "fatal", NULL, fmt, ap);
    va_end(ap);
    exit(1);
}
