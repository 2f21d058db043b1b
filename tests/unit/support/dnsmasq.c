/*
 * dnsmasq.c - test support: a private dnsmasq (dnsmasq.h).
 */
#include "dnsmasq.h"

#include <fcntl.h>
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[64];
static pid_t pid = -1;
static int port;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tdm_free_port(void)
{
    for (;;) {
        struct sockaddr_in sin = { .sin_family = AF_INET };
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sin;
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (u < 0 || bind(u, (struct sockaddr *)&sin, sizeof sin) != 0
            || getsockname(u, (struct sockaddr *)&sin, &len) != 0)
            fail_msg("cannot bind a UDP socket");
        int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = bind(t, (struct sockaddr *)&sin, sizeof sin);
        close(t);
        close(u);
        if (rc == 0)
            return ntohs(sin.sin_port);
    }
}

/* Whether dnsmasq answers a query (for "probe.test A") on UDP. */
static bool answers(void)
{
    static const unsigned char q[] = {
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        5, 'p', 'r', 'o', 'b', 'e', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
    };
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sendto(fd, q, sizeof q, 0, (struct sockaddr *)&sin, sizeof sin);
    struct pollfd pfd = { fd, POLLIN, 0 };
    unsigned char ans[512];
    bool ok = poll(&pfd, 1, 100) == 1 && recv(fd, ans, sizeof ans, 0) > 12 && ans[0] == 0x12;
    close(fd);
    return ok;
}

static void at_exit(void)
{
    tdm_stop();
    if (dir[0] != '\0') {
        char path[128];
        snprintf(path, sizeof path, "%s/dnsmasq.out", dir);
        unlink(path);
        rmdir(dir);
        dir[0] = '\0';
    }
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
        "dnsmasq", "-k", "-p", NULL, "--no-resolv", "--no-hosts", "-C", "/dev/null",
        "--listen-address=127.0.0.1", "--bind-interfaces", "--local=/test/",
        /* Staying root keeps PR_SET_PDEATHSIG, which a change of user clears. */
        "--user=root",
    };
    size_t nfixed = sizeof fixed / sizeof fixed[0];
    for (int attempt = 0; attempt < 5; attempt++) {
        port = tdm_free_port();
        snprintf(portarg, sizeof portarg, "%d", port);
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            char **argv = calloc(nfixed + nargs + 1, sizeof *argv);
            if (argv == NULL)
                _exit(127);
            for (size_t i = 0; i < nfixed; i++)
                argv[i] = (char *)fixed[i];
            argv[3] = portarg;
            for (size_t i = 0; i < nargs; i++)
                argv[nfixed + i] = (char *)args[i];
            execv("/usr/sbin/dnsmasq", argv);
            _exit(127);
        }
        pid = child;
        long long end = now_ms() + 3000;
        while (now_ms() < end) {
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                pid = -1;       /* lost the port race: try another */
                break;
            }
            if (answers())
                return port;
            poll(NULL, 0, 10);
        }
        tdm_stop();
    }
    fail_msg("dnsmasq did not start (see %s)", logf);
    return -1;
}

void tdm_stop(void)
{
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pid = -1;
    }
}
