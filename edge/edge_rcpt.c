/*
 * edge_rcpt.c - does a recipient in a local domain exist? The lookup chain and its file source.
 *
 * Sources are asked in order and may answer later (a mailbox-tier probe or LDAP will); the first
 * answer that is not RCPT_DUNNO decides. A source that cannot answer says RCPT_TEMPFAIL, which the
 * client hears as 450 (try later), never as 550: a broken lookup must not bounce good mail.
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

#include "mem.h"

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
    struct edge_rcpt_source base;
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

static void file_source_lookup(struct edge_rcpt_source *src, const struct smtp_path *p,
                               edge_rcpt_done_fn *done, void *arg)
{
    struct file_source *fs = (struct file_source *)src;
    file_source_refresh(fs);
    if (fs->db == NULL)
        done(RCPT_TEMPFAIL, arg);
    else
        done(rcptdb_match(fs->db, p) ? RCPT_ACCEPT : RCPT_UNKNOWN_USER, arg);
}

static void file_source_free(struct edge_rcpt_source *src)
{
    struct file_source *fs = (struct file_source *)src;
    edge_rcptdb_free(fs->db);
    free(fs->path);
    free(fs);
}

struct edge_rcpt_source *edge_rcpt_file_source(const char *path, struct buf *err)
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
    edge_rcpt_done_fn *done;
    void *arg;
};

static void chain_step(struct chain_walk *w);

static void chain_answer(enum edge_rcpt_verdict v, void *arg)
{
    struct chain_walk *w = arg;
    if (v == RCPT_DUNNO) {
        chain_step(w);
        return;
    }
    w->done(v, w->arg);
    free(w);
}

static void chain_step(struct chain_walk *w)
{
    if (w->next >= w->srv->nrcpt_sources) {
        w->done(RCPT_ACCEPT, w->arg);
        free(w);
        return;
    }
    struct edge_rcpt_source *src = w->srv->rcpt_sources[w->next++];
    src->lookup(src, w->path, chain_answer, w);
}

void edge_rcpt_lookup(struct edge_server *srv, const struct smtp_path *p, edge_rcpt_done_fn *done,
                      void *arg)
{
    struct chain_walk *w = xcalloc(1, sizeof *w);
    w->srv = srv;
    w->path = p;
    w->done = done;
    w->arg = arg;
    chain_step(w);
}
