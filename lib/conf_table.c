/*
 * conf_table.c - the settings table: one row per field of struct conf (conf.h), and the values.
 *
 * Every default, bound and help line lives here and nowhere else: the parser, `-o key=value`,
 * `mxgate config check`, conf/mxgate.conf and docs/configuration.md are all generated from these
 * rows (conf.c). Rows are grouped by the prefix before the first dot, in the order the reference
 * shows them. Defaults are written in the canonical form conf_format_value() prints, and a unit
 * test checks that each one parses and lies within its bounds. Limits follow RFC 5321 section
 * 4.5.3.1 (a minimum of 512 / 1000 / 64 / 255 / 256 octets, 100 recipients) and Postfix's defaults.
 */
#include "conf.h"

#include <stddef.h>

struct conf conf;

#define KB 1024LL
#define MB (1024LL * KB)
#define GB (1024LL * MB)

#define MSEC 1LL
#define SEC (1000LL * MSEC)
#define MIN (60LL * SEC)
#define HOUR (60LL * MIN)
#define DAY (24LL * HOUR)

#define FIELD(f) offsetof(struct conf, f)

/* One macro per shape of row, so each row reads as name, field, default, bounds, reload, help. */
#define STR(n, f, d, r, h) { n, CONF_STR, FIELD(f), d, 0, 0, NULL, r, h }
#define CHOICE_STR(n, f, d, c, r, h) { n, CONF_STR, FIELD(f), d, 0, 0, c, r, h }
#define LIST(n, f, d, r, h) { n, CONF_LIST, FIELD(f), d, 0, 0, NULL, r, h }
#define NUM(t, n, f, d, lo, hi, r, h) { n, t, FIELD(f), d, lo, hi, NULL, r, h }
#define ENUM(n, f, d, c, r, h) { n, CONF_ENUM, FIELD(f), d, 0, 0, c, r, h }
#define BOOL(n, f, d, r, h) { n, CONF_BOOL, FIELD(f), d, 0, 0, NULL, r, h }

const struct conf_row conf_rows[] = {
    /* general */
    STR("state_dir", state_dir, "./var", false,
        "Directory for the appliance's state: private Redis data, self-signed TLS pair, mailboxes."),

    /* log */
    CHOICE_STR("log.level", log_level, "info", "debug|info|warn|error|crit", true,
        "Lowest level of log line written: debug, info, warn, error or crit."),

    /* redis */
    STR("redis.url", redis_url, "", false,
        "Redis to use: redis://host:port/db or unix:/path; empty = start a private redis-server under state_dir."),
    STR("redis.server", redis_server, "redis-server", false,
        "redis-server binary started when redis.url is empty (a bare name is looked up in PATH)."),
    STR("redis.prefix", redis_prefix, "mxg", false,
        "Prefix of every Redis key, so that several installations can share one Redis."),
    NUM(CONF_DURATION, "redis.timeout", redis_timeout, "5s", 100 * MSEC, 60 * SEC, false,
        "Time allowed for connecting to Redis and for each Redis command."),

    /* edge: listeners and identity */
    LIST("edge.listen", edge_listen, "127.0.0.1:2525", false,
        "MX listeners (port 25 in production) as host:port; *:25 = every IPv4 and IPv6 address; empty = none."),
    LIST("edge.submission_listen", edge_submission_listen, "127.0.0.1:2587", false,
        "Submission listeners (STARTTLS, AUTH required) as host:port; empty = none."),
    LIST("edge.smtps_listen", edge_smtps_listen, "", false,
        "Implicit-TLS submission listeners (port 465 in production) as host:port; empty = none."),
    STR("edge.hostname", edge_hostname, "", true,
        "Host name in the 220 greeting, the EHLO reply and Received headers; empty = this machine's FQDN."),
    STR("edge.banner", edge_banner, "ESMTP mxgate", true,
        "Text after the host name in the 220 greeting."),

    /* edge: policy */
    LIST("edge.trusted_networks", edge_trusted_networks, "", true,
        "Client networks (address/prefix) that may relay without AUTH; empty = none."),
    STR("edge.auth_users", edge_auth_users, "", true,
        "File of 'user crypt-hash' lines for SMTP AUTH; empty = AUTH is not offered."),

    /* edge: limits */
    NUM(CONF_INT, "edge.max_command_line", edge_max_command_line, "512", 512, 65536, true,
        "Longest SMTP command line accepted, in octets including CRLF (RFC 5321 minimum: 512)."),
    NUM(CONF_INT, "edge.max_line_length", edge_max_line_length, "1000", 1000, 1000000, true,
        "Longest line of message text accepted, in octets including CRLF (RFC 5321 minimum: 1000)."),
    NUM(CONF_INT, "edge.max_local_part", edge_max_local_part, "64", 64, 1024, true,
        "Longest local part of an address, in octets (RFC 5321 minimum: 64)."),
    NUM(CONF_INT, "edge.max_domain", edge_max_domain, "255", 255, 1024, true,
        "Longest domain of an address, in octets (RFC 5321 minimum: 255)."),
    NUM(CONF_INT, "edge.max_path", edge_max_path, "256", 256, 2048, true,
        "Longest reverse-path or forward-path, in octets including the angle brackets (RFC 5321 minimum: 256)."),
    NUM(CONF_INT, "edge.max_recipients", edge_max_recipients, "1000", 1, 100000, true,
        "Most recipients accepted for one message (RFC 5321 asks for at least 100)."),
    NUM(CONF_INT, "edge.max_messages", edge_max_messages, "100", 1, 100000, true,
        "Most messages accepted in one SMTP session."),
    NUM(CONF_SIZE, "edge.message_size_limit", edge_message_size_limit, "35M", 1 * KB, 2 * GB, true,
        "Largest message accepted, in bytes (k, M, G suffixes); announced in the EHLO SIZE keyword."),
    NUM(CONF_INT, "edge.max_connections", edge_max_connections, "10000", 1, 1000000, true,
        "Most simultaneous client connections per edge process."),
    NUM(CONF_INT, "edge.max_connections_per_ip", edge_max_connections_per_ip, "50", 0, 1000000, true,
        "Most simultaneous connections from one client IP address; 0 = no limit."),
    NUM(CONF_DURATION, "edge.idle_timeout", edge_idle_timeout, "5m", 1 * SEC, 1 * HOUR, true,
        "Time to wait for the client's next command before closing the connection."),
    NUM(CONF_DURATION, "edge.data_timeout", edge_data_timeout, "10m", 1 * SEC, 1 * DAY, true,
        "Longest time one DATA or BDAT transfer may take in total."),
    NUM(CONF_SIZE, "edge.min_data_rate", edge_min_data_rate, "500", 0, 1 * GB, true,
        "Slowest transfer accepted during DATA after its first 30 seconds, in bytes per second; 0 = off."),
    NUM(CONF_INT, "edge.soft_error_limit", edge_soft_error_limit, "10", 1, 1000, true,
        "Errors in one session after which every reply is delayed by edge.error_sleep."),
    NUM(CONF_INT, "edge.hard_error_limit", edge_hard_error_limit, "20", 1, 1000, true,
        "Errors in one session after which the client gets 421 and is disconnected."),
    NUM(CONF_DURATION, "edge.error_sleep", edge_error_sleep, "1s", 0, 1 * MIN, true,
        "Delay added to each reply once a session is past edge.soft_error_limit; 0 = none."),
    ENUM("edge.bare_newline", edge_bare_newline, "normalize", "normalize|reject", true,
        "A bare LF in message text: normalize = accept it as CRLF, reject = refuse the message."),

    /* screen */
    LIST("screen.allow", screen_allow, "", true,
        "CIDR blocks whose clients skip screening (edge.trusted_networks skip it too), e.g. a partner's relays."),
    LIST("screen.deny", screen_deny, "", true,
        "CIDR blocks refused at connect with 554 5.7.1."),
    NUM(CONF_INT, "screen.connection_rate_limit", screen_connection_rate_limit, "0", 0, 1000000, true,
        "Connections one client IP may open per minute on an MX listener; more get 421 4.7.0. 0 = no limit."),
    NUM(CONF_DURATION, "screen.greet_wait", screen_greet_wait, "6s", 0, 1 * MIN, true,
        "Pregreet test: after the first line of a multi-line 220 greeting, wait this long; a client that talks first is a bot. 0 = no pregreet test."),
    NUM(CONF_DURATION, "screen.greet_wait_stress", screen_greet_wait_stress, "2s", 0, 1 * MIN, true,
        "The greet wait when the edge holds over 80% of edge.max_connections."),
    ENUM("screen.pregreet_action", screen_pregreet_action, "drop", "drop|ignore", true,
        "What a client that talks before the greeting gets: drop (554 and close) or ignore (logged only)."),
    LIST("screen.dnsbl_sites", screen_dnsbl_sites, "", true,
        "DNS lists queried in parallel during the greet wait, Postfix postscreen syntax: domain[=filter][*weight], e.g. zen.spamhaus.org=127.0.0.[2..11]*3, list.dnswl.org=127.0.[0..255].[1..3]*-2."),
    NUM(CONF_INT, "screen.dnsbl_threshold", screen_dnsbl_threshold, "1", 1, 1000, true,
        "A combined DNSBL score at or over this refuses the client (554 5.7.1)."),
    NUM(CONF_INT, "screen.dnswl_threshold", screen_dnswl_threshold, "0", -1000, 0, true,
        "A combined score at or under this (negative) value passes the client at once, skipping the other tests; 0 = off."),
    ENUM("screen.dnsbl_action", screen_dnsbl_action, "drop", "drop|ignore", true,
        "What a client over the DNSBL threshold gets: drop (554 and close) or ignore (logged only)."),
    NUM(CONF_DURATION, "screen.pass_ttl", screen_pass_ttl, "1d", 0, 30 * DAY, true,
        "How long a client that passed every test is remembered in Redis (shared by every edge) and greeted at once; 0 = never."),

    /* filters */
    STR("filters.authserv_id", filters_authserv_id, "", true,
        "Name in the Authentication-Results header (RFC 8601) that the edge and `mxgate milter` add; incoming ones claiming it are removed. Empty = edge.hostname."),
    ENUM("filters.spf", filters_spf, "reject", "off|mark|reject", true,
        "SPF (RFC 7208) of HELO and MAIL FROM for unauthenticated clients: off, mark (result in Authentication-Results only), reject (an SPF fail gets 550 5.7.23)."),
    BOOL("filters.dkim_verify", filters_dkim_verify, "yes", true,
        "Verify DKIM signatures (RFC 6376) of mail from unauthenticated clients and report them in Authentication-Results."),
    LIST("filters.dkim_sign", filters_dkim_sign, "", true,
        "DKIM signing keys for mail from authenticated or trusted senders, as domain:selector:/path/key.pem (RSA or Ed25519 PEM); a sender domain without its own key uses its closest listed parent."),
    STR("filters.dkim_signed_headers", filters_dkim_signed_headers, "", true,
        "Colon-separated header fields to sign; empty = from:to:cc:subject:date:message-id:reply-to:in-reply-to:references:mime-version:content-type:content-transfer-encoding (From oversigned)."),

    /* milter */
    LIST("milter.mx", milter_mx, "", true,
        "Milters (Sendmail milter protocol 6) that MX listeners consult, in order: inet:port@host or unix:/path, e.g. inet:11332@127.0.0.1 for spamass-milter."),
    LIST("milter.submission", milter_submission, "", true,
        "Milters consulted by the submission and smtps listeners."),
    ENUM("milter.default_action", milter_default_action, "tempfail", "tempfail|accept|reject", true,
        "What a milter that fails (unreachable, timed out, malformed reply) means: tempfail (451), accept (skip it), reject (550)."),
    NUM(CONF_DURATION, "milter.connect_timeout", milter_connect_timeout, "30s", 100 * MSEC, 10 * MIN, true,
        "Time to connect to a milter."),
    NUM(CONF_DURATION, "milter.command_timeout", milter_command_timeout, "30s", 100 * MSEC, 10 * MIN, true,
        "Time a milter may take to answer a command."),
    NUM(CONF_DURATION, "milter.content_timeout", milter_content_timeout, "5m", 100 * MSEC, 1 * HOUR, true,
        "Time a milter may take to answer a piece of message content or the end of the message."),
    STR("milter.listen", milter_listen, "inet:8891@127.0.0.1", true,
        "Where `mxgate milter` (screening, SPF, DKIM verification and Authentication-Results for an existing Postfix) listens: inet:port@host or unix:/path."),

    /* local */
    LIST("local.domains", local_domains, "example.test", true,
        "Domains delivered to the local mailbox tier; mail for any other domain is relayed."),
    STR("local.recipients", local_recipients, "", true,
        "File of valid local addresses, one per line (or @domain for all of a domain), re-read when it changes; empty = every address in local.domains exists."),
    LIST("local.verify", local_verify, "file", true,
        "Where the edge checks that a local recipient exists, asked in this order until one knows it: file (local.recipients), lmtp (an RCPT probe of the mailbox tier), webadmin (James WebAdmin), ldap. No source configured = every address exists."),
    NUM(CONF_DURATION, "local.verify_timeout", local_verify_timeout, "10s", 100 * MSEC, 5 * MIN, true,
        "How long one source may take to answer; then the client hears 450 (try later)."),
    NUM(CONF_DURATION, "local.verify_positive_ttl", local_verify_positive_ttl, "1h", 0, 30 * DAY, true,
        "How long an address found by lmtp, webadmin or ldap is remembered in Redis (shared by every edge); 0 = not cached."),
    NUM(CONF_DURATION, "local.verify_negative_ttl", local_verify_negative_ttl, "5m", 0, 30 * DAY, true,
        "How long an address no source knows is remembered in Redis as unknown; 0 = not cached."),
    STR("local.verify_lmtp", local_verify_lmtp, "", true,
        "LMTP server probed with RCPT TO (then RSET): host[:port] or unix:/path; empty = the bridge's target for the domain (bridge.lmtp, bridge.domain_lmtp)."),
    STR("local.verify_webadmin", local_verify_webadmin, "", true,
        "Base URL of James's WebAdmin API, e.g. http://james.internal:8000; HEAD /users/{address} tells whether the user exists."),
    STR("local.verify_webadmin_token_file", local_verify_webadmin_token_file, "", true,
        "File holding a JWT sent as 'Authorization: Bearer' to WebAdmin; empty = none."),
    STR("local.verify_ldap_uri", local_verify_ldap_uri, "", true,
        "LDAP server(s) for recipient lookups, e.g. ldap://ldap.internal:389/."),
    STR("local.verify_ldap_base", local_verify_ldap_base, "", true,
        "Search base DN, e.g. ou=people,dc=example,dc=com."),
    STR("local.verify_ldap_filter", local_verify_ldap_filter, "(mail=%s)", true,
        "Search filter: %s is the address, %u its local part, %d its domain (each escaped, RFC 4515); any entry found means the address exists."),
    STR("local.verify_ldap_bind_dn", local_verify_ldap_bind_dn, "", true,
        "DN to bind as; empty = anonymous."),
    STR("local.verify_ldap_password_file", local_verify_ldap_password_file, "", true,
        "File holding the bind password (first line)."),

    /* relay */
    STR("relay.helo_name", relay_helo_name, "", true,
        "Name the relay gives in EHLO to remote servers; empty = edge.hostname (or the machine's name)."),
    STR("relay.smarthost", relay_smarthost, "", true,
        "host[:port] that receives all remote mail instead of the recipients' MX hosts; empty = deliver by MX."),
    NUM(CONF_INT, "relay.mx_port", relay_mx_port, "25", 1, 65535, true,
        "TCP port of remote MX hosts (25 on the internet; tests use others)."),
    ENUM("relay.tls", relay_tls, "may", "none|may|encrypt|verify", true,
        "Outbound STARTTLS: none, may (when offered), encrypt (required), verify (required, certificate checked)."),
    LIST("relay.domain_tls", relay_domain_tls, "", true,
        "Per-domain STARTTLS policies overriding relay.tls, as domain:policy entries, e.g. bank.example:verify."),
    STR("relay.retry_schedule", relay_retry_schedule, "5*1m, 5*10m, 6*1h, 4h", true,
        "Delays between attempts after temporary failures, James delayTime syntax: count*interval, the last repeats."),
    NUM(CONF_INT, "relay.retry_jitter", relay_retry_jitter, "20", 0, 100, true,
        "Random spread of each retry delay, in percent either way, so retries do not arrive in waves."),
    NUM(CONF_DURATION, "relay.max_age", relay_max_age, "5d", 1 * MIN, 365 * DAY, true,
        "A temporary failure of a message older than this becomes permanent (bounce)."),
    NUM(CONF_INT, "relay.max_attempts", relay_max_attempts, "0", 0, 1000000, true,
        "Attempts after which a temporary failure becomes permanent; 0 = only relay.max_age limits."),
    NUM(CONF_INT, "relay.max_inflight", relay_max_inflight, "500", 1, 1000000, true,
        "Recipients one relay process delivers at the same time."),
    NUM(CONF_DURATION, "relay.lease", relay_lease, "30m", 1 * SEC, 1 * DAY, true,
        "How long a claimed recipient stays with its relay process before another may take it over; longer than the slowest delivery."),
    NUM(CONF_DURATION, "relay.poll", relay_poll, "500ms", 10 * MSEC, 1 * MIN, true,
        "How often an idle relay process looks for due work (new mail wakes it at once)."),
    NUM(CONF_DURATION, "relay.history_retention", relay_history_retention, "1h", 0, 30 * DAY, true,
        "How long a message's history (P:log:{ID}, `mxgate queue log`) stays in Redis after the message has left the queue; it costs some 400 bytes of Redis memory per message."),
    STR("relay.failed_repository", relay_failed_repository, "remote-delivery/permanent", true,
        "Mail repository that keeps permanently failed messages; empty = keep none."),
    STR("relay.temporary_repository", relay_temporary_repository, "", true,
        "When set, a temporary failure is not retried but kept in this repository for a later `mxgate repo reprocess` (James's single-try recipe); empty = retry on relay.retry_schedule."),
    NUM(CONF_DURATION, "relay.delay_warning", relay_delay_warning, "0s", 0, 30 * DAY, true,
        "Send the sender one 'delayed' notice for a recipient still not delivered after this long (RFC 3464, NOTIFY=DELAY); 0 = never."),
    NUM(CONF_DURATION, "relay.connect_timeout", relay_connect_timeout, "30s", 100 * MSEC, 10 * MIN, true,
        "Time to set up a TCP connection to a remote server."),
    NUM(CONF_DURATION, "relay.command_timeout", relay_command_timeout, "5m", 100 * MSEC, 1 * HOUR, true,
        "Time to wait for the greeting and for replies to EHLO, MAIL and RCPT (RFC 5321 4.5.3.2: 5 minutes)."),
    NUM(CONF_DURATION, "relay.data_timeout", relay_data_timeout, "3m", 100 * MSEC, 1 * HOUR, true,
        "Time to wait for the reply to DATA and for each block of the message to be sent (RFC 5321: 2-3 minutes)."),
    NUM(CONF_DURATION, "relay.final_timeout", relay_final_timeout, "10m", 100 * MSEC, 1 * HOUR, true,
        "Time to wait for the reply to the final dot (RFC 5321 4.5.3.2: 10 minutes)."),
    NUM(CONF_INT, "relay.destination_concurrency", relay_destination_concurrency, "20", 1, 10000, true,
        "Connections one relay process keeps to one destination host at the same time."),
    NUM(CONF_INT, "relay.rate_limit", relay_rate_limit, "0", 0, 1000000, true,
        "Messages per minute to one recipient domain (all relay nodes together, see relay.throttle_scope); 0 = no limit."),
    NUM(CONF_INT, "relay.concurrency_limit", relay_concurrency_limit, "0", 0, 100000, true,
        "Deliveries to one recipient domain at the same time (all relay nodes together); 0 = no limit."),
    LIST("relay.domain_limits", relay_domain_limits, "", true,
        "Per-domain limits overriding the two above, as domain:rate:concurrency entries (0 = no limit), e.g. example.com:600:10."),
    LIST("relay.mx_limits", relay_mx_limits, "", true,
        "Limits per MX host, whatever the recipient domain, as host:rate:concurrency entries (0 = no limit), e.g. mx1.bigmail.example:1200:30."),
    ENUM("relay.throttle_scope", relay_throttle_scope, "shared", "shared|node", true,
        "Whether rate and concurrency limits count all relay nodes together (shared, in Redis) or each node alone (node)."),

    /* bridge */
    STR("bridge.lmtp", bridge_lmtp, "", true,
        "The mailbox tier's LMTP server (Dovecot, Apache James): host[:port] (port 24) or unix:/path; empty = Maildirs under state_dir/mailboxes."),
    LIST("bridge.domain_lmtp", bridge_domain_lmtp, "", true,
        "Per-domain LMTP servers overriding bridge.lmtp, as domain=target entries, e.g. example.com=unix:/run/dovecot/lmtp; a domain not listed uses bridge.lmtp."),

    /* tls */
    STR("tls.cert", tls_cert, "", true,
        "PEM certificate chain for STARTTLS and implicit TLS; empty (with tls.key) = self-signed pair under state_dir."),
    STR("tls.key", tls_key, "", true,
        "PEM private key of tls.cert; set both or neither."),

    /* dns */
    LIST("dns.servers", dns_servers, "", false,
        "DNS servers as ip or ip:port ([ipv6]:port); empty = the nameservers of /etc/resolv.conf."),
    NUM(CONF_DURATION, "dns.timeout", dns_timeout, "5s", 100 * MSEC, 1 * MIN, false,
        "Time to wait for one DNS answer before trying again or giving up."),

    /* admin */
    STR("admin.listen", admin_listen, "127.0.0.1:8025", false,
        "Address (host:port) for the HTTP admin API, keep it on loopback or a management network; reserved: the API is not served yet (use mxgate queue / repo)."),
};

const size_t conf_nrows = sizeof conf_rows / sizeof conf_rows[0];
