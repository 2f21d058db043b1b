/*
 * bridge_main.c - the mailbox bridge role (`mxgate bridge`, also started by `mxgate run`): the
 * scheduler on the "local" stage, delivering into the mailbox tier over LMTP (bridge.lmtp) or,
 * when none is configured, into Maildirs.
 */
#include "bridge.h"

#include "conf.h"
#include "relay.h"

/* LMTP: the relay's delivery path (connections kept, per-recipient replies) to one target. */
static void lmtp_deliver(struct relay *rl, struct relay_rcpt **rcpts, size_t n)
{
    relay_deliver_to(rl, rcpts, n, conf.bridge_lmtp);
}

int bridge_main(void)
{
    /* An address the mailbox tier does not know goes to James's address-error repository. */
    static const struct relay_role maildir = {
        "bridge", "local", bridge_maildir_deliver, bridge_maildir_init, bridge_maildir_fini,
        "address-error",
    };
    static const struct relay_role lmtp = { "bridge", "local", lmtp_deliver, NULL, NULL, "address-error" };
    return relay_role_main(conf.bridge_lmtp[0] != '\0' ? &lmtp : &maildir);
}
