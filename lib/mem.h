/*
 * mem.h - allocation that never returns NULL.
 *
 * Running out of memory is a broken invariant for an MTA process (STYLE.md, error kind 3): the
 * process logs and aborts, and its supervisor restarts it. Nothing it said 250 to is lost, since
 * the queue lives in Redis.
 */
#ifndef MXG_MEM_H
#define MXG_MEM_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
