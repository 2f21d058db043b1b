/*
 * edge_rcpt.c - does a recipient in a local domain exist? The lookup chain, its shared cache, and
 * the file source.
 *
 * The sources of local.verify (lib/verify.h; the mailbox tier's in mailbox-bridge/) are asked in
 * order until one knows the address; when none does, it is unknown (550 5.1.1). A source that
 * cannot answer stops the walk with 450 (try later), never 550: a broken lookup must not bounce
 * good mail.
 *
 * Answers of the remote sources (lmtp, webadmin, ldap) are cached in Redis, shared by every edge:
 * P:verify:<address> holds "1" for local.verify_positive_ttl or "0" for local.verify_negative_ttl.
 * The cache is read once, just before the first remote source would be asked, so the file source
 * in front of them is never masked by it. With Redis disconnected the cache is skipped; a read
 * that fails or times out answers 450 (the message could not be queued anyway). A TEMPFAIL is
 * never cached.
 *
 * The file source serves local.recipients: one address per line, or "@domain" for every address
 * of a domain; '#' comments. Matching is case-insensitive (ASCII). The file is re-read when its
 * mtime, size or inode changes (checked at most once a second, on lookup), so an operator's edit
 * takes effect without a restart; while the file is missing or malformed, lookups answer
 * RCPT_TEMPFAIL and the problem is logged once.
 */
#include "edge.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf.h"
#include "mem.h"
#include "redis.h"
#include "verify.h"

#define RELOAD_CHECK_MS 1000

struct edge_rcptdb {
    char **addrs;       /* sorted, lower-cased "local@domain" and "@domain" entries */
    size_t n;
};

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct edge_rcptdb *edge_rcptdb_load(const char *path, struct buf *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        buf_printf(err, "%s: cannot read: %s\n", path, strerror(errno));
        return NULL;
    }
    struct edge_rcptdb *db = xcalloc(1, sizeof *db);
    size_t cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    unsigned lineno = 0;
    bool ok = true;
    while (getline(&line, &linecap, f) >= 0) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        char *end = p + strlen(p);
        while (end > p && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        char *at = strrchr(p, '@');
        if (at == NULL || at[1] == '\0' || strpbrk(p, " \t") != NULL) {
            struct buf shown = BUF_INIT;
            buf_append_sanitized(&shown, p, strlen(p), 100);
            buf_printf(err, "%s:%u: '%s' is not an address or @domain\n", path, lineno, buf_cstr(&shown));
            buf_release(&shown);
            ok = false;
            continue;
        }
        if (db->n == cap) {
            cap = cap ? cap * 2 : 64;
            db->addrs = xrealloc(db->addrs, cap * sizeof *db->addrs);
        }
        db->addrs[db->n] = xstrdup(p);
        lower(db->addrs[db->n]);
        db->n++;
    }
    if (ferror(f)) {
        buf_printf(err, "%s: read error: %s\n", path, strerror(errno));
        ok = false;
    }
    free(line);
    fclose(f);
    if (!ok) {
        edge_rcptdb_free(db);
        return NULL;
    }
    qsort(db->addrs, db->n, sizeof *db->addrs, cmp_str);
    return db;
}

void edge_rcptdb_free(struct edge_rcptdb *db)
{
    if (db == NULL)
        return;
    for (size_t i = 0; i < db->n; i++)
        free(db->addrs[i]);
    free(db->addrs);
    free(db);
}

static bool rcptdb_has(const struct edge_rcptdb *db, const char *key)
{
    return bsearch(&key, db->addrs, db->n, sizeof *db->addrs, cmp_str) != NULL;
}

/* local@domain, lower-cased, without a trailing dot on the domain: is it, or its domain, listed? */
static bool rcptdb_match(const struct edge_rcptdb *db, const struct smtp_path *p)
{
    struct buf key = BUF_INIT;
    buf_printf(&key, "%s@%s", p->local, p->domain);
    lower(key.data);
    if (key.len > 0 && key.data[key.len - 1] == '.')
        key.data[--key.len] = '\0';
    bool found = rcptdb_has(db, key.data) || rcptdb_has(db, strrchr(key.data, '@'));
    buf_release(&key);
    return found;
}

/* ---- the file source ---- */

struct file_source {
    struct verify_source base;
    char *path;
    struct edge_rcptdb *db;         /* NULL while the file is missing or malformed */
    struct stat st;                 /* of the file db was loaded from */
    long long checked_ms;           /* last stat() */
};

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size
           && a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Re-reads the file if it changed since it was loaded. */
static void file_source_refresh(struct file_source *fs)
{
    long long now = clock_wall_ms();
    if (now - fs->checked_ms < RELOAD_CHECK_MS)
        return;
    fs->checked_ms = now;
    struct stat st;
    if (stat(fs->path, &st) != 0) {
        if (fs->db != NULL || fs->st.st_ino != 0)
            log_msg(LOG_ERR, "recipients-unreadable", NULL, "%s: %s; answering 450 until it is back",
                    fs->path, strerror(errno));
        edge_rcptdb_free(fs->db);
        fs->db = NULL;
        memset(&fs->st, 0, sizeof fs->st);
        return;
    }
    if (fs->db != NULL && same_file(&st, &fs->st))
        return;
    struct buf err = BUF_INIT;
    struct edge_rcptdb *db = edge_rcptdb_load(fs->path, &err);
    bool was_broken = fs->db == NULL;
    edge_rcptdb_free(fs->db);
    fs->db = db;
    fs->st = st;
    if (db == NULL)
        log_msg(LOG_ERR, "recipients-invalid", NULL, "%sanswering 450 until it is fixed", buf_cstr(&err));
    else
        log_msg(LOG_INFO, "recipients-loaded", NULL, "%s: %zu entries%s", fs->path, db->n,
                was_broken ? "" : " (changed)");
    buf_release(&err);
}

static void file_source_lookup(struct verify_source *src, const struct smtp_path *p, verify_done_fn *done,
                               void *arg)
{
    struct file_source *fs = (struct file_source *)src;
    file_source_refresh(fs);
    if (fs->db == NULL)
        done(VERIFY_TEMPFAIL, arg);
    else
        done(rcptdb_match(fs->db, p) ? VERIFY_EXISTS : VERIFY_DUNNO, arg);
}

static void file_source_free(struct verify_source *src)
{
    struct file_source *fs = (struct file_source *)src;
    edge_rcptdb_free(fs->db);
    free(fs->path);
    free(fs);
}

struct verify_source *edge_rcpt_file_source(const char *path, struct buf *err)
{
    struct stat st;
    struct edge_rcptdb *db = NULL;
    if (stat(path, &st) != 0)
        buf_printf(err, "%s: cannot read: %s\n", path, strerror(errno));
    else
        db = edge_rcptdb_load(path, err);
    if (db == NULL)
        return NULL;
    struct file_source *fs = xcalloc(1, sizeof *fs);
    fs->base.name = "file";
    fs->base.lookup = file_source_lookup;
    fs->base.free = file_source_free;
    fs->path = xstrdup(path);
    fs->db = db;
    fs->st = st;
    fs->checked_ms = clock_wall_ms();
    return &fs->base;
}

/* ---- the chain ---- */

/* One lookup walking the chain. */
struct chain_walk {
    struct edge_server *srv;
    const struct smtp_path *path;
    size_t next;                    /* index of the source to ask next */
    bool cache_read;                /* the cache was consulted (and missed) */
    bool remote_asked;              /* a cacheable source has been asked */
    struct buf key;                 /* P:verify:<address> */
    edge_rcpt_done_fn *done;
    void *arg;
};

static void chain_step(struct chain_walk *w);

static void chain_end(struct chain_walk *w, enum edge_rcpt_verdict v)
{
    w->done(v, w->arg);
    buf_release(&w->key);
    free(w);
}

/* Remembers a final answer of the remote sources; nothing waits for Redis to confirm. */
static void cache_store(struct chain_walk *w, bool exists)
{
    long long ttl = exists ? conf.local_verify_positive_ttl : conf.local_verify_negative_ttl;
    if (!w->remote_asked || ttl <= 0 || w->srv->redis == NULL)
        return;
    if (!redis_commandf(w->srv->redis, NULL, NULL, "SET %s %s PX %lld", buf_cstr(&w->key),
                        exists ? "1" : "0", ttl))
        log_msg(LOG_WARN, "verify-cache", NULL, "Redis is not connected: answer not cached");
}

static void chain_answer(enum verify_answer a, void *arg)
{
    struct chain_walk *w = arg;
    switch (a) {
    case VERIFY_DUNNO:
        chain_step(w);
        return;
    case VERIFY_EXISTS:
        cache_store(w, true);
        chain_end(w, RCPT_ACCEPT);
        return;
    case VERIFY_TEMPFAIL:
        chain_end(w, RCPT_TEMPFAIL);
        return;
    }
}

static void cache_cb(redisReply *reply, const char *err, void *arg)
{
    struct chain_walk *w = arg;
    if (err == NULL && reply != NULL && reply->type == REDIS_REPLY_STRING && reply->len == 1) {
        chain_end(w, reply->str[0] == '1' ? RCPT_ACCEPT : RCPT_UNKNOWN_USER);
        return;
    }
    if (err != NULL) {
        /* Redis is needed to take the message anyway: try later rather than ask around it. */
        log_msg(LOG_WARN, "verify-cache", NULL, "cache not read: %s", err);
        chain_end(w, RCPT_TEMPFAIL);
        return;
    }
    chain_step(w);
}

static void chain_step(struct chain_walk *w)
{
    struct edge_server *srv = w->srv;
    if (srv->rcpt_closed) {
        chain_end(w, RCPT_TEMPFAIL);
        return;
    }
    if (w->next >= srv->nrcpt_sources) {
        cache_store(w, false);
        chain_end(w, RCPT_UNKNOWN_USER);
        return;
    }
    struct verify_source *src = srv->rcpt_sources[w->next];
    if (src->cacheable && !w->cache_read) {
        w->cache_read = true;
        buf_printf(&w->key, "%s:verify:%s@", conf.redis_prefix, w->path->local);
        for (const char *d = w->path->domain; *d != '\0'; d++)
            buf_putc(&w->key, (char)tolower((unsigned char)*d));
        if (srv->redis != NULL
            && redis_commandf(srv->redis, cache_cb, w, "GET %s", buf_cstr(&w->key)))
            return;
    }
    w->next++;
    w->remote_asked |= src->cacheable;
    src->lookup(src, w->path, chain_answer, w);
}

void edge_rcpt_lookup(struct edge_server *srv, const struct smtp_path *p, edge_rcpt_done_fn *done,
                      void *arg)
{
    if (srv->nrcpt_sources == 0) {
        done(srv->rcpt_closed ? RCPT_TEMPFAIL : RCPT_ACCEPT, arg);
        return;
    }
    struct chain_walk *w = xcalloc(1, sizeof *w);
    w->srv = srv;
    w->path = p;
    w->done = done;
    w->arg = arg;
    chain_step(w);
}
