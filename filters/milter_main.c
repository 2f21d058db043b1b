/*
 * milter_main.c - the milter role (`mxgate milter`): mxgate's sender checks offered to an
 * existing Postfix as a Sendmail-protocol milter through libmilter (smtpd_milters =
 * inet:127.0.0.1:8891 against the default milter.listen = inet:8891@127.0.0.1).
 *
 * Start-up: the names (authserv-id: filters.authserv_id, else edge.hostname, else the machine's
 * name; the same name is SPF's receiver), the loop thread with the filters (milter_loop.c), the
 * callbacks (milter_checks.c), then libmilter: smfi_register, smfi_setconn(milter.listen) and
 * smfi_opensocket, so a bad address or a port in use fails here (exit 1, reason logged) rather
 * than inside smfi_main.
 *
 * Signals: SIGTERM, SIGINT and SIGHUP are blocked in every thread before any is started, so only
 * libmilter's own signal thread (sigwait) takes them: each stops accepting connections and lets
 * smfi_main return (within libmilter's 5 s listener poll); SIGINT also aborts the sessions at
 * their next command. libmilter's worker pool serves no open MTA connection after that, so the
 * stop does not wait for them: the callbacks are closed (milter_checks_close: any still called
 * answers tempfail), the ones already running get up to the longest check wait to return, then
 * the loop and the filters are freed and the process exits, closing those connections; the MTA
 * applies its milter_default_action to the messages they carried.
 */
#include "milter_role.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "clock.h"
#include "conf.h"
#include "log.h"

/* Beyond the longest check wait, for a callback to return after its answer. */
#define STOP_MARGIN_MS 1000

/* libmilter's socket syntax: inet:port[@host], inet6:port[@host], unix:/path or local:/path. */
static bool listen_ok(const char *s)
{
    static const char *const prefixes[] = { "inet:", "inet6:", "unix:", "local:" };
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(s, prefixes[i], strlen(prefixes[i])) == 0 && s[strlen(prefixes[i])] != '\0')
            return true;
    return false;
}

/* Registers the callbacks and opens milter.listen; false with the reason in err. */
static bool milter_listen(struct buf *err)
{
    struct smfiDesc desc = *milter_checks_desc();
    if (smfi_register(desc) != MI_SUCCESS) {
        buf_puts(err, "libmilter refused the filter registration");
        return false;
    }
    if (!listen_ok(conf.milter_listen)) {
        buf_printf(err, "milter.listen '%s': want inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH",
                   conf.milter_listen);
        return false;
    }
    if (smfi_setconn(conf.milter_listen) != MI_SUCCESS || smfi_opensocket(true) != MI_SUCCESS) {
        buf_printf(err, "cannot listen on %s (address in use or not local?)", conf.milter_listen);
        return false;
    }
    return true;
}

int milter_main(void)
{
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    char hostname[256];
    conf_host_name(conf.edge_hostname, hostname, sizeof hostname);
    const char *authserv_id = conf.filters_authserv_id[0] != '\0' ? conf.filters_authserv_id : hostname;

    struct buf err = BUF_INIT;
    struct milter_loop *ml = milter_loop_new(hostname, &err);
    bool ok = ml != NULL;
    if (ok) {
        milter_checks_init(ml, authserv_id);
        ok = milter_listen(&err);
    }
    if (!ok) {
        log_msg(LOG_CRIT, "start-failed", NULL, "%s", buf_cstr(&err));
        buf_release(&err);
        milter_loop_free(ml);
        return 1;
    }
    buf_release(&err);
    log_msg(LOG_INFO, "started", NULL, "milter listening on %s: authserv-id %s, dnsbl %s, spf %s, dkim %s",
            conf.milter_listen, authserv_id, milter_loop_has_dnsbl(ml) ? "on" : "off",
            milter_loop_has_spf(ml) ? (conf.filters_spf == SPF_POLICY_REJECT ? "reject" : "mark") : "off",
            milter_loop_has_dkim(ml) ? "verify" : "off");

    int rc = smfi_main();

    milter_checks_close();
    log_msg(LOG_INFO, "stopping", NULL,
            "%d MTA connections open: they get the MTA's milter_default_action", milter_checks_active());
    long long deadline = clock_mono_ms() + milter_loop_max_wait_ms() + STOP_MARGIN_MS;
    while (milter_checks_running() > 0) {
        if (clock_mono_ms() > deadline) {
            log_msg(LOG_WARN, "stop-deadline", NULL, "%d callbacks still running; exiting",
                    milter_checks_running());
            _exit(0);
        }
        usleep(20000);
    }
    milter_loop_free(ml);
    log_msg(LOG_INFO, "stopped", NULL, "milter stopped");
    return rc == MI_SUCCESS ? 0 : 1;
}
