/*
 * dnsmasq.h - test support: a private dnsmasq serving the records a test needs.
 *
 * tdm_start() makes a mkdtemp directory and starts Debian's dnsmasq there on a free loopback port
 * (UDP and TCP), authoritative for .test (unknown names under it answer NXDOMAIN) plus whatever
 * the test's own arguments add (--host-record=, --txt-record=, --mx-host=, --server=/zone/ip#port
 * for an upstream that misbehaves...). It returns once dnsmasq answers. dnsmasq is killed and the
 * directory removed at exit (atexit, and PR_SET_PDEATHSIG should the test die). Failures fail the
 * running test.
 */
#ifndef MXG_TEST_DNSMASQ_H
#define MXG_TEST_DNSMASQ_H

/* Starts dnsmasq with args (NULL-terminated; may be NULL); returns its port. */
int tdm_start(const char *const *args);
/* Kills it (also done at exit). */
void tdm_stop(void);

#endif
