/*
 * bridge.h - the mailbox bridge (`mxgate bridge`): delivery of the local stage into the mailbox
 * tier. It is the relay's scheduler (relay_role_main) working the "local" stage, with its own
 * delivery: Maildir under state_dir/mailboxes today (the embedded default); LMTP to Dovecot or
 * Apache James next.
 */
#ifndef MXG_BRIDGE_H
#define MXG_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "conf.h"

struct relay;
struct relay_rcpt;

/* bridge_maildir.c */
bool bridge_maildir_init(struct relay *rl, struct buf *err) __attribute__((warn_unused_result));
void bridge_maildir_fini(struct relay *rl);
void bridge_maildir_deliver(struct relay *rl, struct relay_rcpt **rcpts, size_t n);
/*
 * The mailbox directory name for a local part: lower-cased, anything but [a-z0-9._+-] as '_', no
 * leading '.', at most 64 characters, never empty. Appends to out.
 */
void bridge_mailbox_name(const char *local, struct buf *out);

/* bridge_route.c */
/* The LMTP server for a local domain ("host[:port]", "unix:/path"), or "" for Maildir. */
const char *bridge_lmtp_target(const char *domain);
/* Is target host[:port] or unix:/path? */
bool bridge_target_valid(const char *target);
/* Checks bridge.domain_lmtp entries; false with one line per bad entry in msg. */
bool bridge_domain_lmtp_check(const struct strlist *l, struct buf *msg);

/* bridge_main.c */
int bridge_main(void);

#endif
