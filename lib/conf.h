/*
 * conf.h - mxgate's configuration: one table of settings, one struct of values.
 *
 * Every setting is one row of the table in conf_table.c: name, type, default, bounds, whether a
 * reload may change it, and a one-line help. The file parser, `-o key=value`, `mxgate config
 * check`, conf/mxgate.conf and docs/configuration.md all come from that table, so a default
 * lives in one place (STYLE.md, "Configuration is a table").
 *
 * File syntax: `key = value` lines; `#` starts a comment line; blank lines are ignored; a value
 * may be continued on following lines that start with white space (Postfix main.cf style).
 * Lists are separated by commas and/or white space. Durations take s, m, h, d (or ms) suffixes;
 * sizes take k, M, G (powers of 1024, with an optional B). An unknown key, a bad value or a
 * repeated key is an error reported as "FILE:LINE: message".
 */
#ifndef MXG_CONF_H
#define MXG_CONF_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* A list value: n strings, each owned by the list. */
struct strlist {
    char **v;
    size_t n;
};

enum bare_newline_policy { BARE_NEWLINE_NORMALIZE, BARE_NEWLINE_REJECT };

/* The values. Strings are never NULL ("" when empty); durations are in milliseconds. */
struct conf {
    /* general */
    char *state_dir;                    /* state_dir: where the appliance keeps its state */
    char *log_level;                    /* log.level: debug|info|warn|error|crit */

    /* redis */
    char *redis_url;                    /* redis.url: redis://host:port/db, unix:/path; "" = private */
    char *redis_server;                 /* redis.server: redis-server binary for the private Redis */
    char *redis_prefix;                 /* redis.prefix: namespace of every key */
    long long redis_timeout;            /* redis.timeout: connect / command timeout (ms) */

    /* edge listeners and identity */
    struct strlist edge_listen;         /* edge.listen: MX listeners */
    struct strlist edge_submission_listen; /* edge.submission_listen: submission (AUTH required) */
    struct strlist edge_smtps_listen;   /* edge.smtps_listen: implicit TLS submission (465) */
    char *edge_hostname;                /* edge.hostname: name in the banner and Received */
    char *edge_banner;                  /* edge.banner: text after the hostname in the 220 */

    /* edge policy */
    struct strlist screen_allow;        /* screen.allow: CIDR blocks never screened */
    struct strlist screen_deny;         /* screen.deny: CIDR blocks refused at connect */
    long long screen_connection_rate_limit; /* screen.connection_rate_limit: per IP per minute */
    long long screen_greet_wait;        /* screen.greet_wait (ms); 0 = no pregreet test */
    long long screen_greet_wait_stress; /* screen.greet_wait_stress (ms) */
    int screen_pregreet_action;         /* screen.pregreet_action: enum screen_action */
    struct strlist screen_dnsbl_sites;  /* screen.dnsbl_sites: postscreen syntax */
    long long screen_dnsbl_threshold;   /* screen.dnsbl_threshold */
    long long screen_dnswl_threshold;   /* screen.dnswl_threshold (negative; 0 = off) */
    int screen_dnsbl_action;            /* screen.dnsbl_action: enum screen_action */
    long long screen_pass_ttl;          /* screen.pass_ttl (ms) */
    char *filters_authserv_id;          /* filters.authserv_id: "" = edge.hostname */
    int filters_spf;                    /* filters.spf: enum spf_policy */
    bool filters_dkim_verify;           /* filters.dkim_verify */
    struct strlist filters_dkim_sign;   /* filters.dkim_sign: domain:selector:/key.pem */
    char *filters_dkim_signed_headers;  /* filters.dkim_signed_headers */
    struct strlist milter_mx;           /* milter.mx: milters for MX listeners */
    struct strlist milter_submission;   /* milter.submission: for submission and smtps */
    int milter_default_action;          /* milter.default_action: enum milter_action */
    long long milter_connect_timeout;   /* milter.connect_timeout (ms) */
    long long milter_command_timeout;   /* milter.command_timeout (ms) */
    long long milter_content_timeout;   /* milter.content_timeout (ms) */
    char *milter_listen;                /* milter.listen: where `mxgate milter` listens */
    struct strlist local_domains;       /* local.domains */
    char *local_recipients;             /* local.recipients: file of valid local addresses */
    struct strlist local_verify;        /* local.verify: recipient sources, in order */
    long long local_verify_timeout;     /* local.verify_timeout (ms) */
    long long local_verify_positive_ttl; /* local.verify_positive_ttl (ms): cache of "exists" */
    long long local_verify_negative_ttl; /* local.verify_negative_ttl (ms): cache of "unknown" */
    char *local_verify_lmtp;            /* local.verify_lmtp: probe target; "" = the bridge's */
    char *local_verify_webadmin;        /* local.verify_webadmin: James WebAdmin base URL */
    char *local_verify_webadmin_token_file; /* local.verify_webadmin_token_file: bearer token */
    char *local_verify_ldap_uri;        /* local.verify_ldap_uri */
    char *local_verify_ldap_base;       /* local.verify_ldap_base: search base DN */
    char *local_verify_ldap_filter;     /* local.verify_ldap_filter: %s %u %d template */
    char *local_verify_ldap_bind_dn;    /* local.verify_ldap_bind_dn; "" = anonymous */
    char *local_verify_ldap_password_file; /* local.verify_ldap_password_file */
    struct strlist edge_trusted_networks; /* edge.trusted_networks: CIDR list */
    char *edge_auth_users;              /* edge.auth_users: file of "user crypt-hash" lines */
    char *tls_cert;                     /* tls.cert: PEM certificate chain */
    char *tls_key;                      /* tls.key: PEM private key */
    struct strlist dns_servers;         /* dns.servers: host[:port]; empty = resolv.conf */
    char *admin_listen;                 /* admin.listen: admin API address */

    /* edge limits */
    long long edge_max_command_line;    /* edge.max_command_line: octets incl. CRLF */
    long long edge_max_line_length;     /* edge.max_line_length: text line, octets incl. CRLF */
    long long edge_max_local_part;      /* edge.max_local_part */
    long long edge_max_domain;          /* edge.max_domain */
    long long edge_max_path;            /* edge.max_path */
    long long edge_max_recipients;      /* edge.max_recipients: per message */
    long long edge_max_messages;        /* edge.max_messages: per session */
    long long edge_message_size_limit;  /* edge.message_size_limit: bytes */
    long long edge_max_connections;     /* edge.max_connections: per process */
    long long edge_max_connections_per_ip; /* edge.max_connections_per_ip */
    long long edge_idle_timeout;        /* edge.idle_timeout (ms) */
    long long edge_data_timeout;        /* edge.data_timeout (ms): total time for one DATA/BDAT */
    long long edge_min_data_rate;       /* edge.min_data_rate: bytes/s during DATA after the first 30 s */
    long long edge_soft_error_limit;    /* edge.soft_error_limit: errors before replies slow down */
    long long edge_hard_error_limit;    /* edge.hard_error_limit: errors before 421 and close */
    long long edge_error_sleep;         /* edge.error_sleep (ms): delay per reply past the soft limit */
    int edge_bare_newline;              /* edge.bare_newline: enum bare_newline_policy */

    /* relay */
    char *relay_helo_name;              /* relay.helo_name: EHLO name; "" = edge.hostname */
    char *relay_smarthost;              /* relay.smarthost: host[:port] for all remote mail; "" = MX */
    long long relay_mx_port;            /* relay.mx_port: port of MX hosts (25) */
    int relay_tls;                      /* relay.tls: enum relay_tls_policy */
    struct strlist relay_domain_tls;    /* relay.domain_tls: "domain:policy" overrides */
    char *relay_retry_schedule;         /* relay.retry_schedule: James delayTime syntax */
    long long relay_retry_jitter;       /* relay.retry_jitter: percent */
    long long relay_max_age;            /* relay.max_age (ms) */
    long long relay_max_attempts;       /* relay.max_attempts: 0 = only max_age limits */
    long long relay_max_inflight;       /* relay.max_inflight: recipients in delivery per node */
    long long relay_lease;              /* relay.lease (ms) */
    long long relay_poll;               /* relay.poll (ms): claim interval when idle */
    long long relay_history_retention;  /* relay.history_retention (ms): P:log:{ID} after removal */
    char *relay_failed_repository;      /* relay.failed_repository: "" = none */
    char *relay_temporary_repository;   /* relay.temporary_repository: "" = retry on schedule */
    long long relay_delay_warning;      /* relay.delay_warning (ms): 0 = no delay notices */
    long long relay_connect_timeout;    /* relay.connect_timeout (ms) */
    long long relay_command_timeout;    /* relay.command_timeout (ms): greeting, EHLO, MAIL, RCPT */
    long long relay_data_timeout;       /* relay.data_timeout (ms): DATA and each data block */
    long long relay_final_timeout;      /* relay.final_timeout (ms): reply to the final dot */
    long long relay_destination_concurrency; /* relay.destination_concurrency: connections per host per process */
    long long relay_rate_limit;         /* relay.rate_limit: messages per minute per domain; 0 = none */
    long long relay_concurrency_limit;  /* relay.concurrency_limit: deliveries at once per domain; 0 = none */
    struct strlist relay_domain_limits; /* relay.domain_limits: "domain:rate:concurrency" overrides */
    struct strlist relay_mx_limits;     /* relay.mx_limits: "host:rate:concurrency" per MX host */
    int relay_throttle_scope;           /* relay.throttle_scope: enum relay_throttle_scope */
    long long dns_timeout;              /* dns.timeout (ms) */
    char *bridge_lmtp;                  /* bridge.lmtp: host[:port] or unix:/path; "" = Maildir */
    struct strlist bridge_domain_lmtp;  /* bridge.domain_lmtp: domain=target overrides */
};

enum relay_tls_policy { RELAY_TLS_NONE, RELAY_TLS_MAY, RELAY_TLS_ENCRYPT, RELAY_TLS_VERIFY };
enum relay_throttle_scope { THROTTLE_SHARED, THROTTLE_NODE };
enum screen_action { SCREEN_ACTION_DROP, SCREEN_ACTION_IGNORE };
enum spf_policy { SPF_POLICY_OFF, SPF_POLICY_MARK, SPF_POLICY_REJECT };
enum milter_action { MILTER_ACTION_TEMPFAIL, MILTER_ACTION_ACCEPT, MILTER_ACTION_REJECT };

extern struct conf conf;

enum conf_type {
    CONF_STR,       /* any string */
    CONF_INT,       /* integer within [min, max] */
    CONF_SIZE,      /* bytes, with k/M/G suffixes, within [min, max] */
    CONF_DURATION,  /* milliseconds, from ms/s/m/h/d suffixes (bare number = seconds), within [min, max] */
    CONF_BOOL,      /* yes/no/true/false/on/off/1/0 */
    CONF_LIST,      /* struct strlist */
    CONF_ENUM,      /* int index into a '|'-separated list of names */
};

/* One row of the settings table. */
struct conf_row {
    const char *name;       /* e.g. "edge.listen" */
    enum conf_type type;
    size_t offset;          /* offsetof(struct conf, field) */
    const char *def;        /* default, in file syntax */
    long long min, max;     /* bounds for INT, SIZE, DURATION (in the stored unit) */
    const char *choices;    /* CONF_ENUM: "normalize|reject"; CONF_STR: allowed values or NULL */
    bool reloadable;        /* may a reload change it */
    const char *help;       /* one line */
};

extern const struct conf_row conf_rows[];
extern const size_t conf_nrows;

/*
 * Resets every value to its default, then reads path (NULL = defaults only) and applies the -o
 * overrides ("key=value" strings) in order. On errors, appends one "FILE:LINE: message\n" per
 * error to errs (every error, not just the first) and returns false; conf then holds defaults
 * plus whatever parsed.
 */
bool conf_load(const char *path, char *const *overrides, size_t noverrides, struct buf *errs)
    __attribute__((warn_unused_result));
/* Frees every value (at exit, to keep leak checkers quiet). */
void conf_free(void);
/* Writes docs/configuration.md's text (generated from the table). */
void conf_write_reference(struct buf *out);
/* Writes conf/mxgate.conf's text: every key, commented out, with its default and help. */
void conf_write_sample(struct buf *out);
/* The current value of a row in file syntax (for `mxgate config show`). */
void conf_format_value(const struct conf_row *row, struct buf *out);
const struct conf_row *conf_find(const char *name);

/* Value parsers, shared with other code that reads durations and sizes. */
bool conf_parse_duration(const char *s, long long *ms);
bool conf_parse_size(const char *s, long long *bytes);
bool conf_parse_bool(const char *s, bool *out);
void strlist_free(struct strlist *l);
bool strlist_contains_ci(const struct strlist *l, const char *s);
/* The name to give ourselves: name when set, else the machine's name, else "localhost". */
void conf_host_name(const char *name, char *out, size_t n);

#endif
