/*
 * ops.h - operator-facing commands of the mxgate binary: the appliance supervisor (`mxgate run`)
 * and configuration checks.
 */
#ifndef MXG_OPS_H
#define MXG_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* The global command-line options, passed on to the roles `mxgate run` starts. */
struct ops_args {
    const char *argv0;
    const char *conf_file;      /* -c FILE, or NULL */
    char **overrides;           /* -o key=value, in order */
    size_t noverrides;
};

/* `mxgate run`: the private Redis (when redis.url is empty), the roles, restarts; exit status. */
int ops_run(const struct ops_args *a);

/*
 * Checks what the file parser cannot: listener specs, networks, the Redis URL, and that the files
 * named (recipients, AUTH users, TLS certificate and key) load. Appends "FILE: key: message" lines.
 */
bool ops_config_validate(const char *file, struct buf *errs) __attribute__((warn_unused_result));

/* ---- operator commands on the queue (ops_queue.c) and the repositories (ops_repo.c) ---- */

/* `mxgate queue list|show|delete|flush|hold|release ...`: 0, 1 on a failure, 2 on a usage error. */
int ops_queue(const struct ops_args *a, int argc, char **argv);
/* `mxgate repo list|show|delete|reprocess ...`: the same exit statuses. */
int ops_repo(const struct ops_args *a, int argc, char **argv);

#endif
