/*
 * bridge_main.c - the mailbox bridge role (`mxgate bridge`, also started by `mxgate run`): the
 * scheduler on the "local" stage, delivering into Maildirs.
 */
#include "bridge.h"

#include "relay.h"

int bridge_main(void)
{
    static const struct relay_role bridge = {
        "bridge", "local", bridge_maildir_deliver, bridge_maildir_init, bridge_maildir_fini,
    };
    return relay_role_main(&bridge);
}
