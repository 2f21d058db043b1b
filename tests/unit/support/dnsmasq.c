/*
 * dnsmasq.c - test support: a private dnsmasq (dnsmasq.h).
 */
#include "dnsmasq.h"

#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "peer.h"

static char dir[64];
static pid_t pid = -1;
static int port;

/* Whether dnsmasq answers a query (for "probe.test A") on UDP. */
static bool answers(void *arg)
{
    (void)arg;
    static const unsigned char q[] = {
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        5, 'p', 'r', 'o', 'b', 'e', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
    };
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = tp_loopback(port);
    sendto(fd, q, sizeof q, 0, (struct sockaddr *)&sin, sizeof sin);
    struct pollfd pfd = { fd, POLLIN, 0 };
    unsigned char ans[512];
    bool ok = poll(&pfd, 1, 100) == 1 && recv(fd, ans, sizeof ans, 0) > 12 && ans[0] == 0x12;
    close(fd);
    return ok;
}

static void at_exit(void)
{
    tp_cleanup(&pid, dir);
}

int tdm_start(const char *const *args)
{
    if (dir[0] == '\0') {
        snprintf(dir, sizeof dir, "/tmp/mxg-dnsmasq-XXXXXX");
        if (mkdtemp(dir) == NULL)
            fail_msg("mkdtemp failed");
        atexit(at_exit);
    }
    size_t nargs = 0;
    while (args != NULL && args[nargs] != NULL)
        nargs++;
    char portarg[16], logf[128];
    snprintf(logf, sizeof logf, "%s/dnsmasq.out", dir);
    static const char *const fixed[] = {
        "/usr/sbin/dnsmasq", "-k", "-p", NULL, "--no-resolv", "--no-hosts", "-C", "/dev/null",
        "--listen-address=127.0.0.1", "--bind-interfaces", "--local=/test/",
        /* Staying root keeps PR_SET_PDEATHSIG, which a change of user clears. */
        "--user=root",
    };
    size_t nfixed = sizeof fixed / sizeof fixed[0];
    char **argv = calloc(nfixed + nargs + 1, sizeof *argv);
    assert_non_null(argv);
    for (size_t i = 0; i < nfixed; i++)
        argv[i] = (char *)fixed[i];
    argv[3] = portarg;
    for (size_t i = 0; i < nargs; i++)
        argv[nfixed + i] = (char *)args[i];
    for (int attempt = 0; attempt < 5; attempt++) {
        port = tp_free_port();
        snprintf(portarg, sizeof portarg, "%d", port);
        pid = tp_spawn(argv, logf, NULL);
        enum tp_wait w = tp_wait_ready(pid, answers, NULL, 3000, NULL);
        if (w == TP_READY) {
            free(argv);
            return port;
        }
        if (w == TP_EXITED)
            pid = -1;       /* lost the port race: try another */
        tdm_stop();
    }
    free(argv);
    fail_msg("dnsmasq did not start (see %s)", logf);
    return -1;
}

void tdm_stop(void)
{
    tp_kill_wait(pid, SIGKILL);
    pid = -1;
}
