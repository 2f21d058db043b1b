/*
 * mxgate.c - the one binary's entry: global options, the configuration, and a subcommand per role
 * or operator task.
 *
 *   mxgate [-c FILE] [-o key=value]... COMMAND [ARGS]
 *
 * A bad argument is named in the error (exit 2); a bad configuration is reported with file and
 * line (exit 1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "edge.h"
#include "log.h"
#include "mem.h"
#include "bridge.h"
#include "milter_role.h"
#include "ops.h"
#include "relay.h"

#define MXGATE_VERSION "0.1.0"
#define DEFAULT_CONF "/etc/mxgate/mxgate.conf"

static void usage(FILE *out)
{
    fputs("usage: mxgate [-c FILE] [-o key=value]... COMMAND [ARGS]\n"
          "\n"
          "commands:\n"
          "  run                   the appliance: a private Redis (unless redis.url is set) and every role\n"
          "  edge                  the SMTP front only (needs redis.url)\n"
          "  relay                 the scheduler and outbound delivery only (needs redis.url)\n"
          "  bridge                delivery of local mail into the mailbox tier (needs redis.url)\n"
          "  milter                the checks (DNSBL, SPF, DKIM, Authentication-Results) as a milter\n"
          "                        for an existing Postfix, on milter.listen\n"
          "  config check [FILE]   check a configuration file; every error with file and line\n"
          "  config show           print every setting's value after the file and -o overrides\n"
          "  config reference      print the settings reference (docs/configuration.md)\n"
          "  config sample         print a commented configuration file (conf/mxgate.conf)\n"
          /* operator commands on the queue and repositories (ops_queue.c, ops_repo.c) */
          "  queue list [--sender S] [--rcpt R] [--domain D] [--state STATE] [--limit N]\n"
          "                        messages, oldest first, with each recipient's state and due time\n"
          "  queue show ID [--body]\n"
          "                        one message: envelope, recipients, last replies, history\n"
          "  queue delete ID...    remove messages entirely\n"
          "  queue flush [ID...]   make deferred recipients due now (all, or the messages')\n"
          "  queue hold ID...      keep messages from delivery until released\n"
          "  queue release ID... [--keep-due]\n"
          "                        deliver held messages again (now, or at their old due time)\n"
          "  repo list [NAME] [--limit N]\n"
          "                        repositories and their sizes, or one's messages, newest first\n"
          "  repo show NAME ID [--body]\n"
          "                        one message of a repository\n"
          "  repo delete NAME ID...|--all\n"
          "                        delete messages of a repository\n"
          "  repo reprocess NAME ID...|--all [--stage main|local]\n"
          "                        retry their failed recipients, out of the repository\n"
          "                        (queue and repo commands: --json prints one object per line)\n"
          /* end of operator commands */
          "  version               print the version\n"
          "\n"
          "options:\n"
          "  -c FILE               configuration file (default " DEFAULT_CONF " if it exists)\n"
          "  -o key=value          override one setting (repeatable), like Postfix's -o\n",
          out);
}

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "mxgate: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'mxgate help')\n");
    return 2;
}

/* Loads the configuration; on errors prints them to stderr and returns false. */
static bool load(const struct ops_args *a, const char *file)
{
    struct buf errs = BUF_INIT;
    bool ok = conf_load(file, a->overrides, a->noverrides, &errs);
    if (!ok)
        fputs(buf_cstr(&errs), stderr);
    buf_release(&errs);
    if (ok) {
        enum log_level lvl;
        if (log_level_parse(conf.log_level, &lvl))
            log_init(log_role_name(), lvl, 2);
    }
    return ok;
}

static int cmd_config(struct ops_args *a, int argc, char **argv)
{
    if (argc < 1)
        return bad_usage("'config' needs a subcommand: check, show, reference or sample%s", "");
    const char *sub = argv[0];
    struct buf out = BUF_INIT;
    int rc = 0;
    if (strcmp(sub, "check") == 0) {
        if (argc > 2)
            return bad_usage("'config check' takes one file, got '%s' too", argv[2]);
        const char *file = argc == 2 ? argv[1] : a->conf_file;
        struct buf errs = BUF_INIT;
        bool ok = conf_load(file, a->overrides, a->noverrides, &errs);
        if (ok)
            ok = ops_config_validate(file, &errs);
        if (ok)
            printf("%s: ok\n", file ? file : "(defaults)");
        else
            fputs(buf_cstr(&errs), stderr);
        buf_release(&errs);
        rc = ok ? 0 : 1;
    } else if (strcmp(sub, "show") == 0) {
        if (!load(a, a->conf_file))
            return 1;
        for (size_t i = 0; i < conf_nrows; i++) {
            buf_reset(&out);
            conf_format_value(&conf_rows[i], &out);
            printf("%s = %s\n", conf_rows[i].name, buf_cstr(&out));
        }
    } else if (strcmp(sub, "reference") == 0) {
        conf_write_reference(&out);
        fputs(buf_cstr(&out), stdout);
    } else if (strcmp(sub, "sample") == 0) {
        conf_write_sample(&out);
        fputs(buf_cstr(&out), stdout);
    } else {
        rc = bad_usage("unknown config subcommand '%s'", sub);
    }
    buf_release(&out);
    conf_free();
    return rc;
}

int main(int argc, char **argv)
{
    struct ops_args a;
    memset(&a, 0, sizeof a);
    a.argv0 = argv[0];
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(opt, "-V") == 0 || strcmp(opt, "--version") == 0) {
            puts("mxgate " MXGATE_VERSION);
            return 0;
        } else if (strcmp(opt, "-c") == 0 || strcmp(opt, "-o") == 0) {
            if (i + 1 >= argc)
                return bad_usage("option '%s' needs an argument", opt);
            const char *val = argv[++i];
            if (opt[1] == 'c') {
                a.conf_file = val;
            } else {
                if (strchr(val, '=') == NULL)
                    return bad_usage("-o needs key=value, got '%s'", val);
                a.overrides = xrealloc(a.overrides, (a.noverrides + 1) * sizeof *a.overrides);
                a.overrides[a.noverrides++] = (char *)val;
            }
        } else {
            return bad_usage("unknown option '%s'", opt);
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (a.conf_file == NULL && access(DEFAULT_CONF, F_OK) == 0)
        a.conf_file = DEFAULT_CONF;
    const char *cmd = argv[i++];
    int rc;
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        rc = 0;
    } else if (strcmp(cmd, "version") == 0) {
        puts("mxgate " MXGATE_VERSION);
        rc = 0;
    } else if (strcmp(cmd, "config") == 0) {
        rc = cmd_config(&a, argc - i, argv + i);
    } else if (strcmp(cmd, "queue") == 0 || strcmp(cmd, "repo") == 0) {
        /* operator commands: they load the configuration themselves, after their arguments */
        rc = cmd[0] == 'q' ? ops_queue(&a, argc - i, argv + i) : ops_repo(&a, argc - i, argv + i);
    } else if (strcmp(cmd, "edge") == 0 || strcmp(cmd, "relay") == 0 || strcmp(cmd, "bridge") == 0
               || strcmp(cmd, "milter") == 0 || strcmp(cmd, "run") == 0) {
        if (i < argc) {
            rc = bad_usage("unexpected argument '%s'", argv[i]);
        } else {
            log_init(cmd, LOG_INFO, 2);
            if (!load(&a, a.conf_file)) {
                rc = 1;
            } else {
                rc = strcmp(cmd, "edge") == 0 ? edge_main()
                     : strcmp(cmd, "relay") == 0 ? relay_main()
                     : strcmp(cmd, "bridge") == 0 ? bridge_main()
                     : strcmp(cmd, "milter") == 0 ? milter_main() : ops_run(&a);
                conf_free();
            }
        }
    } else {
        rc = bad_usage("unknown command '%s'", cmd);
    }
    free(a.overrides);
    return rc;
}
