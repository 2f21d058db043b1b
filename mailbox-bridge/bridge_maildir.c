/*
 * bridge_maildir.c - delivery into Maildirs: state_dir/mailboxes/<user>/Maildir, readable by any
 * mail client (the embedded default, so that a fresh `mxgate run` delivers where a person can
 * look).
 *
 * Each message is written the Maildir way (written in tmp/, fsync'ed, renamed into new/, the
 * directory fsync'ed), so a crash never leaves half a message in new/ and a delivery reported is
 * on disk. The file gets Return-Path and Delivered-To lines and LF line ends, as local delivery
 * agents write them. Disk work runs on the worker pool, never on the event loop. A failure (disk
 * full, permissions) defers the recipient, and the relay's retry schedule applies.
 */
#include "bridge.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "conf.h"
#include "log.h"
#include "mem.h"
#include "relay.h"
#include "workq.h"

#define WORKER_THREADS 2
#define MAILBOX_NAME_MAX 64

/* One message's Maildir deliveries, handed to a worker and back. */
struct maildir_job {
    struct relay *rl;
    struct relay_rcpt **rcpts;      /* borrowed from the scheduler until relay_delivered */
    size_t n;
    char **errors;                  /* per recipient: NULL when delivered, else why not */
    char *root;                     /* state_dir/mailboxes */
    char host[256];
};

void bridge_mailbox_name(const char *local, struct buf *out)
{
    size_t start = out->len;
    for (const char *p = local; *p && out->len - start < MAILBOX_NAME_MAX; p++) {
        unsigned char c = (unsigned char)tolower((unsigned char)*p);
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("._+-", c) != NULL;
        buf_putc(out, ok ? (char)c : '_');
    }
    if (out->len == start)
        buf_putc(out, '_');             /* never empty */
    else if (out->data[start] == '.')
        out->data[start] = '_';         /* never ".", ".." or a hidden name */
}

static bool mkdir_p(const char *path, struct buf *err)
{
    char *tmp = xstrdup(path);
    for (char *p = tmp + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
                buf_printf(err, "cannot create %s: %s", tmp, strerror(errno));
                free(tmp);
                return false;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    free(tmp);
    return true;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* The message as a Maildir file: envelope lines first, CR LF made LF. */
static void maildir_text(const struct relay_rcpt *r, struct buf *out)
{
    const struct relay_msg *m = r->msg;
    buf_printf(out, "Return-Path: <%s>\nDelivered-To: %s\n", m->sender, r->to);
    buf_reserve(out, m->body_len);
    const char *p = m->body, *end = m->body + m->body_len;
    while (p < end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (cr == NULL) {
            buf_append(out, p, (size_t)(end - p));
            break;
        }
        buf_append(out, p, (size_t)(cr - p));
        if (cr + 1 < end && cr[1] == '\n') {
            buf_putc(out, '\n');        /* CR LF -> LF */
            p = cr + 2;
        } else {
            buf_putc(out, '\r');        /* a lone CR stays (the edge never queues one) */
            p = cr + 1;
        }
    }
}

/* Delivers one recipient; NULL on success, else a malloc'd reason. Runs on a worker thread. */
static char *deliver_one(const struct maildir_job *job, const struct relay_rcpt *r, unsigned seq)
{
    struct buf dir = BUF_INIT, err = BUF_INIT, text = BUF_INIT;
    char *local = xstrndup(r->to, (size_t)(r->domain - 1 - r->to));
    buf_printf(&dir, "%s/", job->root);
    bridge_mailbox_name(local, &dir);
    free(local);
    buf_puts(&dir, "/Maildir");
    char *base = xstrdup(buf_cstr(&dir));
    char name[512], tmp[4096], final[4096];
    snprintf(name, sizeof name, "%lld.M%sQ%u.%s", clock_wall_ms() / 1000, r->claim.member, seq, job->host);
    for (char *p = name; *p; p++)
        if (*p == '/')
            *p = '_';
    snprintf(tmp, sizeof tmp, "%s/tmp/%s", base, name);
    snprintf(final, sizeof final, "%s/new/%s", base, name);
    int fd = -1;
    const char *subs[] = { "/tmp", "/new", "/cur" };
    for (size_t i = 0; i < 3; i++) {
        buf_reset(&dir);
        buf_printf(&dir, "%s%s", base, subs[i]);
        if (!mkdir_p(buf_cstr(&dir), &err))
            goto out;
    }
    maildir_text(r, &text);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !write_all(fd, text.data, text.len) || fsync(fd) != 0) {
        buf_printf(&err, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, final) != 0) {
        buf_printf(&err, "cannot move %s into new/: %s", tmp, strerror(errno));
        goto out;
    }
    buf_reset(&dir);
    buf_printf(&dir, "%s/new", base);
    int dfd = open(buf_cstr(&dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        buf_printf(&err, "cannot sync %s: %s", buf_cstr(&dir), strerror(errno));
    if (dfd >= 0)
        close(dfd);
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(base);
    buf_release(&dir);
    buf_release(&text);
    if (err.len == 0)
        return NULL;
    return buf_steal(&err);
}

static void maildir_work(void *arg)
{
    struct maildir_job *job = arg;
    for (size_t i = 0; i < job->n; i++)
        job->errors[i] = deliver_one(job, job->rcpts[i], (unsigned)i);
}

static void maildir_done(void *arg)
{
    struct maildir_job *job = arg;
    for (size_t i = 0; i < job->n; i++) {
        struct relay_rcpt *r = job->rcpts[i];
        bool ok = job->errors[i] == NULL;
        r->result.outcome = ok ? OUTCOME_DELIVERED : OUTCOME_DEFERRED;
        r->result.code = ok ? 250 : 451;
        snprintf(r->result_status, sizeof r->result_status, "%s", ok ? "2.0.0" : "4.3.0");
        r->result.status = r->result_status;
        free(r->result_text);
        r->result_text = ok ? xstrdup("delivered to Maildir") : job->errors[i];
        r->result.text = r->result_text;
        if (!ok)
            log_msg(LOG_ERR, "maildir-failed", &(struct log_ctx){ .queue_id = r->msg->id }, "%s: %s",
                    r->to, job->errors[i]);
    }
    relay_delivered(job->rl, job->rcpts, job->n);
    free(job->errors);
    free(job->rcpts);
    free(job->root);
    free(job);
}

void bridge_maildir_deliver(struct relay *rl, struct relay_rcpt **rcpts, size_t n)
{
    struct maildir_job *job = xcalloc(1, sizeof *job);
    job->rl = rl;
    job->n = n;
    job->rcpts = xcalloc(n, sizeof *job->rcpts);
    memcpy(job->rcpts, rcpts, n * sizeof *rcpts);
    job->errors = xcalloc(n, sizeof *job->errors);
    struct buf root = BUF_INIT;
    buf_printf(&root, "%s/mailboxes", conf.state_dir);
    job->root = buf_steal(&root);
    snprintf(job->host, sizeof job->host, "%s", rl->hostname);
    for (char *p = job->host; *p; p++)
        if (*p == '/' || *p == ':')
            *p = '_';
    workq_submit(rl->role_data, maildir_work, maildir_done, job);
}

bool bridge_maildir_init(struct relay *rl, struct buf *err)
{
    rl->role_data = workq_new(rl->base, WORKER_THREADS);
    if (rl->role_data == NULL) {
        buf_puts(err, "cannot start the Maildir worker threads");
        return false;
    }
    return true;
}

void bridge_maildir_fini(struct relay *rl)
{
    workq_free(rl->role_data);
    rl->role_data = NULL;
}
