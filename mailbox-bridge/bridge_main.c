/*
 * bridge_main.c - the mailbox bridge role (`mxgate bridge`, also started by `mxgate run`): the
 * scheduler on the "local" stage, delivering into the mailbox tier over LMTP (bridge.lmtp,
 * bridge.domain_lmtp) or, for a domain with no LMTP server, into Maildirs.
 */
#include "bridge.h"

#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "relay.h"

static int cmp_target(const void *a, const void *b)
{
    const struct relay_rcpt *x = *(struct relay_rcpt *const *)a, *y = *(struct relay_rcpt *const *)b;
    return strcmp(bridge_lmtp_target(x->domain), bridge_lmtp_target(y->domain));
}

/*
 * A message's local recipients, grouped by the store their domain goes to: over LMTP (the relay's
 * delivery path: connections kept, one reply per recipient) to each server, or into Maildirs.
 */
static void deliver(struct relay *rl, struct relay_rcpt **rcpts, size_t n)
{
    qsort(rcpts, n, sizeof *rcpts, cmp_target);
    for (size_t i = 0; i < n;) {
        const char *target = bridge_lmtp_target(rcpts[i]->domain);
        size_t j = i + 1;
        while (j < n && strcmp(bridge_lmtp_target(rcpts[j]->domain), target) == 0)
            j++;
        if (target[0] != '\0')
            relay_deliver_to(rl, rcpts + i, j - i, target);
        else
            bridge_maildir_deliver(rl, rcpts + i, j - i);
        i = j;
    }
}

int bridge_main(void)
{
    /* An address the mailbox tier does not know goes to James's address-error repository. */
    static const struct relay_role bridge = {
        "bridge", "local", deliver, bridge_maildir_init, bridge_maildir_fini, "address-error",
    };
    return relay_role_main(&bridge);
}
