"""Recipient verification at RCPT time against the mailbox tier: an LMTP probe of a real Dovecot,
James's WebAdmin API (served here by a real HTTP server holding the same paths), and LDAP (a real
slapd). Answers are cached in Redis for every edge; a source that is down gives 450, never 550."""
import os
import socket
import subprocess
import time

import pytest

import mxtest
from dovecot import Dovecot
from mxtest import expect


def rcpt(port, address):
    """The edge's reply to RCPT TO:<address> in a fresh transaction."""
    c = mxtest.SMTP(port)
    try:
        expect(c.cmd("EHLO client.test"), 250)
        expect(c.cmd("MAIL FROM:<s@ext.test>"), 250)
        return c.cmd(f"RCPT TO:<{address}>")
    finally:
        c.close()


NO_CACHE = {"local.verify_positive_ttl": "0", "local.verify_negative_ttl": "0"}


@pytest.fixture
def dove(tmp_path):
    d = Dovecot(tmp_path / "dovecot")
    yield d
    d.stop()


def test_lmtp_probe_asks_the_mailbox_tier(edge_factory, dove):
    edge = edge_factory({"local.verify": "lmtp", "bridge.lmtp": f"127.0.0.1:{dove.lmtp_port}", **NO_CACHE})
    expect(rcpt(edge.port, "bob@local.test"), 250, "2.1.5")
    expect(rcpt(edge.port, "carol@example.test"), 250, "2.1.5")
    expect(rcpt(edge.port, "nobody@local.test"), 550, "5.1.1", "User unknown")
    # Mail for another domain is not asked about (and not relayed for an outside client).
    expect(rcpt(edge.port, "bob@ext.test"), 554, "5.7.1")


def test_lmtp_probe_down_gives_450_never_550(edge_factory, dove):
    edge = edge_factory({"local.verify": "lmtp", "bridge.lmtp": f"127.0.0.1:{dove.lmtp_port}",
                         "local.verify_timeout": "2s", **NO_CACHE})
    expect(rcpt(edge.port, "bob@local.test"), 250, "2.1.5")
    dove.stop()
    expect(rcpt(edge.port, "bob@local.test"), 450, "4.3.0", "try again later")
    expect(rcpt(edge.port, "nobody@local.test"), 450, "4.3.0")
    dove.start()
    mxtest.wait_for(lambda: rcpt(edge.port, "bob@local.test")[0] == 250, what="probe answers again")
    expect(rcpt(edge.port, "nobody@local.test"), 550, "5.1.1")


def test_lmtp_probe_uses_the_domain_s_own_server(edge_factory, dove, tmp_path):
    # bridge.domain_lmtp sends example.test to Dovecot; local.test has no LMTP server at all.
    edge = edge_factory({"local.verify": "lmtp", **NO_CACHE,
                         "bridge.domain_lmtp": f"example.test=127.0.0.1:{dove.lmtp_port}"})
    expect(rcpt(edge.port, "bob@example.test"), 250, "2.1.5")
    expect(rcpt(edge.port, "nobody@example.test"), 550, "5.1.1")
    # No server for local.test: the probe does not know, so no source knows the address.
    expect(rcpt(edge.port, "bob@local.test"), 550, "5.1.1")


def test_answers_are_cached_in_redis_for_every_edge(edge_factory, dove, redis_server):
    o = {"local.verify": "lmtp", "bridge.lmtp": f"127.0.0.1:{dove.lmtp_port}",
         "local.verify_positive_ttl": "1h", "local.verify_negative_ttl": "10m", "local.verify_timeout": "2s"}
    first = edge_factory(o, name="edge1")
    expect(rcpt(first.port, "bob@local.test"), 250, "2.1.5")
    expect(rcpt(first.port, "nobody@local.test"), 550, "5.1.1")
    r = redis_server.client
    # The answer is written without waiting for Redis's acknowledgement.
    mxtest.wait_for(lambda: r.get("mxg:verify:nobody@local.test") == b"0", what="answers cached")
    assert r.get("mxg:verify:bob@local.test") == b"1"
    assert 3590 <= r.ttl("mxg:verify:bob@local.test") <= 3600
    assert r.get("mxg:verify:nobody@local.test") == b"0"
    assert 590 <= r.ttl("mxg:verify:nobody@local.test") <= 600
    # The domain is cached lower-cased; the local part as given.
    expect(rcpt(first.port, "bob@LOCAL.test"), 250, "2.1.5")
    assert r.get("mxg:verify:bob@local.test") == b"1"
    # With the tier down, a second edge answers both from the shared cache...
    dove.stop()
    second = edge_factory(o, name="edge2")
    expect(rcpt(second.port, "bob@local.test"), 250, "2.1.5")
    expect(rcpt(second.port, "nobody@local.test"), 550, "5.1.1")
    # ...and defers what is not cached; a temporary failure is not remembered.
    expect(rcpt(second.port, "carol@local.test"), 450, "4.3.0")
    assert r.get("mxg:verify:carol@local.test") is None


def test_file_source_is_asked_first_and_never_cached(edge_factory, dove, redis_server, tmp_path):
    table = tmp_path / "recipients"
    table.write_text("alias@local.test\n")
    edge = edge_factory({"local.verify": "file, lmtp", "local.recipients": str(table),
                         "bridge.lmtp": f"127.0.0.1:{dove.lmtp_port}"})
    expect(rcpt(edge.port, "alias@local.test"), 250, "2.1.5")      # the file knows it
    expect(rcpt(edge.port, "bob@local.test"), 250, "2.1.5")        # Dovecot knows it
    expect(rcpt(edge.port, "nobody@local.test"), 550, "5.1.1")     # nobody does
    r = redis_server.client
    mxtest.wait_for(lambda: r.get("mxg:verify:nobody@local.test") == b"0", what="answers cached")
    assert r.get("mxg:verify:alias@local.test") is None
    assert r.get("mxg:verify:bob@local.test") == b"1"


class HttpDir:
    """Python's own HTTP server over a directory: HEAD /users/<address> answers 200 when the file
    users/<address> exists and 404 when not, as James's WebAdmin does for its users."""

    def __init__(self, dir):
        self.dir = str(dir)
        os.makedirs(os.path.join(self.dir, "users"), exist_ok=True)
        self.port = mxtest.free_port()
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mxtest.wait_for(lambda: mxtest.port_open(self.port), what="http server")

    def add_user(self, address):
        open(os.path.join(self.dir, "users", address), "w").close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


@pytest.fixture
def webadmin(tmp_path):
    h = HttpDir(tmp_path / "webadmin")
    yield h
    h.stop()


def test_webadmin_source(edge_factory, webadmin):
    webadmin.add_user("bob@local.test")
    edge = edge_factory({"local.verify": "webadmin", "local.verify_webadmin": f"http://127.0.0.1:{webadmin.port}",
                         "local.verify_timeout": "2s", **NO_CACHE})
    expect(rcpt(edge.port, "bob@local.test"), 250, "2.1.5")
    expect(rcpt(edge.port, "nobody@local.test"), 550, "5.1.1")
    webadmin.stop()
    expect(rcpt(edge.port, "bob@local.test"), 450, "4.3.0")


def test_webadmin_that_never_answers_gives_450_within_the_timeout(edge_factory):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        edge = edge_factory({"local.verify": "webadmin", "local.verify_timeout": "1s",
                             "local.verify_webadmin": f"http://127.0.0.1:{silent.getsockname()[1]}", **NO_CACHE})
        t0 = time.monotonic()
        expect(rcpt(edge.port, "bob@local.test"), 450, "4.3.0")
        assert time.monotonic() - t0 < 5
    finally:
        silent.close()


def test_ldap_source(edge_factory, tmp_path):
    from slapd import Slapd
    ldap = Slapd(tmp_path / "slapd")
    try:
        ldap.add_user("bob@local.test")
        pw = tmp_path / "ldap-password"
        pw.write_text(ldap.bind_pw + "\n")
        edge = edge_factory({"local.verify": "ldap", "local.verify_ldap_uri": ldap.uri,
                             "local.verify_ldap_base": ldap.base, "local.verify_ldap_bind_dn": ldap.bind_dn,
                             "local.verify_ldap_password_file": str(pw), "local.verify_timeout": "2s",
                             **NO_CACHE})
        expect(rcpt(edge.port, "bob@local.test"), 250, "2.1.5")
        expect(rcpt(edge.port, "nobody@local.test"), 550, "5.1.1")
        # A local part that is a filter wildcard matches nothing but itself (RFC 4515 escaping).
        expect(rcpt(edge.port, "*@local.test"), 550, "5.1.1")
        ldap.stop()
        expect(rcpt(edge.port, "bob@local.test"), 450, "4.3.0")
    finally:
        ldap.stop()


@pytest.mark.parametrize("settings, error", [
    ({"local.verify": "lmtp"}, "local.verify: lmtp needs local.verify_lmtp, bridge.lmtp or bridge.domain_lmtp"),
    ({"local.verify": "file, dns"}, "local.verify: unknown source 'dns' (file, lmtp, webadmin, ldap)"),
    ({"local.verify": "webadmin"}, "local.verify: webadmin needs local.verify_webadmin"),
    ({"local.verify": "ldap", "local.verify_ldap_uri": "ldap://127.0.0.1/"},
     "local.verify: ldap needs local.verify_ldap_uri and local.verify_ldap_base"),
    ({"local.verify": "webadmin", "local.verify_webadmin": "ftp://x"}, "local.verify: "),
    ({"local.verify": "ldap", "local.verify_ldap_uri": "ldap://127.0.0.1/", "local.verify_ldap_base": "dc=x",
      "local.verify_ldap_filter": "(mail=%x)"}, "local.verify: "),
    ({"local.verify": "ldap", "local.verify_ldap_uri": "ldap://127.0.0.1/", "local.verify_ldap_base": "dc=x",
      "local.verify_ldap_password_file": "/nonexistent/pw"},
     "local.verify: local.verify_ldap_password_file: /nonexistent/pw: cannot read"),
    ({"local.verify": "lmtp", "local.verify_lmtp": "host:notaport"},
     "local.verify: local.verify_lmtp: 'host:notaport' is not host[:port] or unix:/path"),
    ({"bridge.domain_lmtp": "example.test"}, "bridge.domain_lmtp: 'example.test' is not domain=target"),
    ({"bridge.domain_lmtp": "bad..domain=127.0.0.1:24"}, "bridge.domain_lmtp: 'bad..domain' is not a domain"),
    ({"bridge.domain_lmtp": "example.test=host:99999"},
     "bridge.domain_lmtp: 'host:99999' is not host[:port] or unix:/path"),
    ({"bridge.lmtp": "x:y"}, "bridge.lmtp: 'x:y' is not host[:port] or unix:/path"),
])
def test_config_check_names_the_bad_verification_setting(tmp_path, settings, error):
    args = [mxtest.BIN]
    for k, v in settings.items():
        args += ["-o", f"{k}={v}"]
    r = subprocess.run(args + ["config", "check"], capture_output=True, text=True)
    assert r.returncode != 0
    assert error in r.stderr, r.stderr
