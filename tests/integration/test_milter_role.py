"""`mxgate milter` behind a real Postfix: a private Postfix instance (the one test_relay_tls.py
starts) with smtpd_milters pointing at `mxgate milter`, relaying what it accepts to smtp-sink, and
dnsmasq serving the SPF records, the DKIM key and the DNSBL zones.

Covers: SPF pass + DKIM pass giving exactly one Authentication-Results header on top (and the
signature still verifying downstream); an SPF fail refused with 550 5.7.23 (filters.spf=reject,
with the domain's exp= text) or delivered marked spf=fail (filters.spf=mark); forged
Authentication-Results fields claiming our authserv-id removed while other ids' are kept; an
authenticated sender (Postfix SASL through Dovecot's auth service) not checked; DNS that never
answers giving temperror, not a rejection; a DNSBL-listed client refused at connect (554 5.7.1)
and a DNSWL-listed one noted; parallel sessions; Postfix's milter_default_action (tempfail, 451
4.7.1) when the milter is down, and for a session open when it stops. Every milter started is
stopped with SIGTERM and must exit 0 after logging "stopped" (a sanitizer build's reports fail
the test through mxtest).
"""
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import dkim
import pytest

import mxtest
from mxtest import Dnsmasq
from conftest import stop_all
from test_relay import Sink
from test_relay_tls import Postfix

AUTHSERV = "mx.test"
SELECTOR = "sel"
RFC2045_TSPECIALS = set('()<>@,;:\\"/[]?=')


class DovecotAuth:
    """Dovecot's auth service alone (no mail protocols) on a loopback port, for Postfix's SASL
    (smtpd_sasl_type = dovecot): user alice, password secret-alice."""

    def __init__(self):
        # Dovecot's unprivileged processes must reach the config and the users file.
        self.dir = tempfile.mkdtemp(prefix="mxgate-dovecot-auth-")
        os.chmod(self.dir, 0o755)
        for d in ("base", "state"):
            os.makedirs(os.path.join(self.dir, d))
        users = os.path.join(self.dir, "users")
        with open(users, "w") as f:
            f.write("alice:{PLAIN}secret-alice::::::\n")
        os.chmod(users, 0o644)
        self.port = mxtest.free_port()
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(f"""base_dir = {self.dir}/base
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
default_internal_user = dovecot
default_login_user = dovenull
protocols = none
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home=/nonexistent
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
""")
        subprocess.run(["dovecot", "-c", self.conf], check=True)
        mxtest.wait_for(lambda: mxtest.port_open(self.port), what="dovecot auth")

    def stop(self):
        subprocess.run(["dovecot", "-c", self.conf, "stop"], capture_output=True)
        mxtest.wait_for(lambda: not mxtest.port_open(self.port), what="dovecot stopped")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """dnsmasq, smtp-sink, a DKIM key for src.test, and Postfix whose milter is on w.milter_port.
    Every test starts its own `mxgate milter` there (milter fixture)."""
    d = tmp_path_factory.mktemp("milter-world")
    key = str(d / "dkim.pem")
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", key, "2048"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    pub = base64.b64encode(der).decode()
    with open(key, "rb") as f:
        privkey = f.read()
    stops = []          # every server started, stopped in reverse order whatever happens

    class World:
        pass
    w = World()
    w.dir, w.privkey, w.pub, w.milter_port = d, privkey, pub, mxtest.free_port()
    try:
        w.dns = Dnsmasq(d, [
            "--txt-record=src.test,v=spf1 ip4:127.0.0.1 -all",
            "--txt-record=fail.test,v=spf1 ip4:192.0.2.1 exp=why.fail.test -all",
            "--txt-record=why.fail.test,%{i} is not a mail server of %{d}",
            mxtest.txt_record(f"{SELECTOR}._domainkey.src.test", f"v=DKIM1; k=rsa; p={pub}"),
            "--host-record=2.0.0.127.bl.test,127.0.0.2",
            "--host-record=3.0.0.127.wl.test,127.0.0.3",
        ])
        stops.append(w.dns.stop)
        w.sink = Sink()
        stops.append(w.sink.remove)
        w.auth = DovecotAuth()
        stops.append(w.auth.stop)
        w.pf = Postfix(w.sink.port, f"""
smtpd_milters = inet:127.0.0.1:{w.milter_port}
milter_default_action = tempfail
smtpd_recipient_restrictions = permit
smtpd_peername_lookup = no
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{w.auth.port}
""")
        stops.append(w.pf.stop)
        w.pf.start()
        yield w
    finally:
        stop_all(reversed(stops))


@pytest.fixture
def milter(world, tmp_path):
    """Starts `mxgate milter` with extra -o overrides on the port Postfix uses; every one started
    is stopped with SIGTERM afterwards and must exit 0 after logging "stopped"."""
    started = []

    def make(overrides=None, name="milter"):
        o = {
            "milter.listen": f"inet:{world.milter_port}@127.0.0.1",
            "dns.servers": f"127.0.0.1:{world.dns.port}",
            "dns.timeout": "2s",
            "filters.authserv_id": AUTHSERV,
            "filters.spf": "reject",
            "filters.dkim_verify": "yes",
            "screen.dnsbl_sites": "bl.test*2, wl.test*-5",
            "screen.dnswl_threshold": "-1",
        }
        o.update(overrides or {})
        m = mxtest.start_role(tmp_path / name, None, o, command="milter")
        started.append(m)
        mxtest.wait_for(lambda: mxtest.port_open(world.milter_port), what="milter listening")
        return m

    def stop(m):
        rc = m.stop()
        assert rc == 0 and m.events("stopped"), m.read_log()[-3000:]

    yield make
    stop_all([lambda m=m: stop(m) for m in started if m.proc is not None])


def connect(port, source="127.0.0.1"):
    """A raw SMTP client from a chosen loopback source address (mxtest.SMTP connects from .1)."""
    c = mxtest.SMTP.__new__(mxtest.SMTP)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    c.buf = b""
    c.greeting = c.reply()
    return c


def message(sender, rcpt, subject, extra_headers="", body="Hello.\r\n"):
    mid = f"<{subject.replace(' ', '-')}.{time.monotonic_ns()}@{sender.split('@')[1]}>"
    return (f"From: Alice <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: {mid}\r\n{extra_headers}"
            f"\r\n{body}").encode()


def sign(world, msg):
    return dkim.sign(msg, SELECTOR.encode(), b"src.test", world.privkey,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])


def send(world, sender, rcpt, content, source="127.0.0.1", helo="client.test", login=None):
    """One message through Postfix (after AUTH PLAIN with login = (user, password)); returns the
    replies to MAIL FROM and to the final dot (the latter None when MAIL FROM was refused)."""
    c = connect(world.pf.port, source)
    try:
        assert c.greeting[0] == 220, c.greeting
        assert c.cmd(f"EHLO {helo}")[0] == 250
        if login is not None:
            plain = base64.b64encode(f"\0{login[0]}\0{login[1]}".encode()).decode()
            assert c.cmd(f"AUTH PLAIN {plain}")[0] == 235
        mail = c.cmd(f"MAIL FROM:<{sender}>")
        if mail[0] != 250:
            return mail, None
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(content + b".\r\n")
        return mail, c.reply()
    finally:
        try:
            c.cmd("QUIT")
        except (OSError, ConnectionError):
            pass
        c.close()


def delivered(world, rcpt, timeout=20):
    """The sink's dump of the one message for rcpt (each test uses its own recipient)."""
    try:
        mxtest.wait_for(lambda: world.pf.sent(rcpt), timeout=timeout, what=f"delivery to {rcpt}")
    except AssertionError:
        raise AssertionError(f"no delivery to {rcpt}\n--- postfix maillog\n{world.pf.log()[-4000:]}")
    dumps = [x for x in world.sink.dumps() if f"<{rcpt}>".encode() in x]
    assert len(dumps) == 1, dumps
    return dumps[0]


def headers(dump):
    """The header fields Postfix delivered (after the sink's own lines and Received header), as
    (name, unfolded value, raw text) in order. The sink writes LF line ends."""
    text = dump.decode()
    start = text.index("\nReceived: from ") + 1                 # the sink's Received header
    rest = text[start:]
    head = rest[:rest.index("\n\n")]
    fields = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t"):
            fields[-1] += "\n" + line
        else:
            fields.append(line)
    fields = fields[1:]         # the sink's own Received field
    out = []
    for f in fields:
        name, _, value = f.partition(":")
        out.append((name, " ".join(value.split()), f))
    return out


def delivered_content(dump):
    """The message as Postfix delivered it (from its first field on), with CRLF line ends again."""
    text = dump.decode()
    start = text.index("\nReceived: from ") + 1
    rest = text[start:]
    fields_start = re.search(r"\n(?![ \t])", rest).end()        # past the sink's own field
    return rest[fields_start:].replace("\n", "\r\n").encode()


def authres(hdrs):
    return [v for n, v, _ in hdrs if n.lower() == "authentication-results"]


def token(v):
    """An RFC 8601 property value as dkim_auth_results writes it: a token, or a quoted-string."""
    return f'"{v}"' if any(ch in RFC2045_TSPECIALS for ch in v) else v


def b_prefix(signed):
    sig = signed.decode()
    b = re.search(r"\bb=([^;]*)", sig.replace("\r\n", "")).group(1)
    return "".join(b.split())[:8]


def test_spf_and_dkim_pass_give_one_header_on_top(world, milter):
    m = milter()
    msg = message("a@src.test", "pass@remote.test", "signed")
    sig = sign(world, msg)
    mail, final = send(world, "a@src.test", "pass@remote.test", sig + msg)
    assert mail[0] == 250 and final[0] == 250, (mail, final)
    dump = delivered(world, "pass@remote.test")
    hdrs = headers(dump)
    want = (f"{AUTHSERV}; spf=pass smtp.mailfrom=src.test; dkim=pass header.d=src.test "
            f"header.s={SELECTOR} header.b={token(b_prefix(sig))}")
    assert authres(hdrs) == [want]
    # On top of the message as Postfix delivers it: before Postfix's own Received field.
    assert hdrs[0][0] == "Authentication-Results", [h[0] for h in hdrs]
    assert hdrs[1][0] == "Received" and "by postfix.remote.test" in hdrs[1][1]
    # Folded after a ';' so that no line is longer than 78 characters.
    raw = hdrs[0][2]
    assert raw == ("Authentication-Results: mx.test; spf=pass smtp.mailfrom=src.test;\n\t"
                   f"dkim=pass header.d=src.test header.s={SELECTOR} header.b={token(b_prefix(sig))}")
    # The signature still verifies after Postfix and the milter: our field is not signed.
    key = f"v=DKIM1; k=rsa; p={world.pub}".encode()
    assert dkim.verify(delivered_content(dump), dnsfunc=lambda name, **kw: key)
    ev = [e for e in m.events("message") if e.get("from") == "a@src.test"]
    assert len(ev) == 1
    e = ev[0]
    assert (e["action"], e["spf_helo"], e["spf_mailfrom"], e["checked"], e["authres_removed"]) == \
        ("accept", "none", "pass", True, 0)
    assert e["dkim"] == want.split("; ", 2)[2]
    assert e["queue_id"] and e["client"] == "127.0.0.1" and e["score"] == 0 and e["dnswl"] is False
    assert (e["mta"], e["daemon"], e["helo"]) == ("postfix.remote.test", "postfix.remote.test", "client.test")
    assert f"{e['queue_id']}: " in world.pf.log()        # the MTA's queue id ({i})


def test_spf_fail_is_refused_with_the_domains_explanation(world, milter):
    m = milter()
    msg = message("a@fail.test", "fail@remote.test", "x")
    mail, final = send(world, "a@fail.test", "fail@remote.test", msg)
    assert final is None
    assert mail == (550, ["5.7.23 SPF validation failed: 127.0.0.1 is not a mail server of fail.test"])
    ev = m.events("message")
    assert len(ev) == 1
    assert (ev[0]["action"], ev[0]["spf_mailfrom"], ev[0]["from"]) == ("reject", "fail", "a@fail.test")
    assert ev[0]["reply"] == "550 5.7.23 SPF validation failed: 127.0.0.1 is not a mail server of fail.test"
    assert not world.pf.sent("fail@remote.test")


def test_spf_fail_is_marked_with_spf_mark(world, milter):
    m = milter({"filters.spf": "mark"})
    msg = message("a@fail.test", "mark@remote.test", "x")
    mail, final = send(world, "a@fail.test", "mark@remote.test", msg)
    assert mail[0] == 250 and final[0] == 250, (mail, final)
    hdrs = headers(delivered(world, "mark@remote.test"))
    assert authres(hdrs) == [f"{AUTHSERV}; spf=fail smtp.mailfrom=fail.test; dkim=none"]
    assert hdrs[0][0] == "Authentication-Results"
    ev = m.events("message")
    assert [(e["action"], e["spf_mailfrom"], e["dkim"]) for e in ev] == [("accept", "fail", "dkim=none")]


def test_forged_results_are_removed_and_others_kept(world, milter):
    m = milter()
    forged = ("Authentication-Results: mx.test; spf=pass smtp.mailfrom=src.test\r\n"
              "Authentication-Results: other.test; dkim=pass header.d=src.test\r\n"
              "X-Between: 1\r\n"
              "Authentication-Results: (forged)\r\n MX.Test 1; dkim=pass\r\n"
              "Authentication-Results: mx.test.other.test; spf=pass\r\n")
    msg = message("a@src.test", "forged@remote.test", "forged", extra_headers=forged)
    mail, final = send(world, "a@src.test", "forged@remote.test", msg)
    assert mail[0] == 250 and final[0] == 250, (mail, final)
    hdrs = headers(delivered(world, "forged@remote.test"))
    assert authres(hdrs) == [
        f"{AUTHSERV}; spf=pass smtp.mailfrom=src.test; dkim=none",
        "other.test; dkim=pass header.d=src.test",
        "mx.test.other.test; spf=pass",
    ]
    assert hdrs[0][0] == "Authentication-Results"
    assert [n for n, _, _ in hdrs].count("X-Between") == 1
    ev = m.events("message")
    assert [(e["action"], e["authres_removed"]) for e in ev] == [("accept", 2)]


def test_authenticated_sender_is_not_checked_but_loses_forged_results(world, milter):
    m = milter()
    forged = "Authentication-Results: mx.test; spf=pass smtp.mailfrom=fail.test\r\n"
    msg = message("a@fail.test", "auth@remote.test", "auth", extra_headers=forged)
    mail, final = send(world, "a@fail.test", "auth@remote.test", msg, login=("alice", "secret-alice"))
    assert mail[0] == 250 and final[0] == 250, (mail, final)      # an SPF fail, not refused
    hdrs = headers(delivered(world, "auth@remote.test"))
    assert authres(hdrs) == []
    ev = m.events("message")
    assert len(ev) == 1
    assert (ev[0]["action"], ev[0]["checked"], ev[0]["authres_removed"]) == ("accept", False, 1)
    assert "spf_mailfrom" not in ev[0] and "dkim" not in ev[0]


def test_unanswered_dns_gives_temperror_not_a_rejection(world, milter):
    # A DNS server that never answers: every lookup runs into dns.timeout.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        m = milter({"dns.servers": f"127.0.0.1:{hole.getsockname()[1]}", "dns.timeout": "500ms"})
        msg = message("a@src.test", "slow@remote.test", "slow")
        sig = sign(world, msg)
        mail, final = send(world, "a@src.test", "slow@remote.test", sig + msg)
    assert mail[0] == 250 and final[0] == 250, (mail, final)
    hdrs = headers(delivered(world, "slow@remote.test"))
    assert authres(hdrs) == [f"{AUTHSERV}; spf=temperror smtp.mailfrom=src.test; dkim=temperror "
                             f"header.d=src.test header.s={SELECTOR} header.b={token(b_prefix(sig))}"]
    ev = m.events("screen")
    assert [(e["verdict"], e["score"], e["dns_errors"]) for e in ev] == [("pass", 0, 2)]
    ev = m.events("message")
    assert [(e["action"], e["spf_helo"], e["spf_mailfrom"]) for e in ev] == \
        [("accept", "temperror", "temperror")]


def test_dnsbl_listed_client_is_refused_at_connect(world, milter):
    m = milter()
    c = connect(world.pf.port, "127.0.0.2")
    try:
        greeting = c.greeting
        c.cmd("EHLO client.test")
        mail = c.cmd("MAIL FROM:<a@src.test>")
    finally:
        c.close()
    # Postfix answers a milter's connect-time 5xx with its own 554 greeting, then gives the
    # milter's reply to every mail command (and logs it as the CONNECT verdict).
    assert greeting == (554, ["postfix.remote.test ESMTP not accepting connections"])
    reply = "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using DNSBL"
    assert mail == (554, [reply[4:]])
    assert f"milter-reject: CONNECT from unknown[127.0.0.2]: {reply}; proto=SMTP" in world.pf.log()
    ev = m.events("screen")
    assert [(e["verdict"], e["action"], e["score"], e["reasons"], e["client"]) for e in ev] == \
        [("dnsbl", "reject", 2, "bl.test=127.0.0.2*2", "127.0.0.2")]
    assert m.events("message") == []


def test_dnswl_listed_client_is_noted(world, milter):
    m = milter()
    msg = message("a@nospf.test", "wl@remote.test", "wl")
    mail, final = send(world, "a@nospf.test", "wl@remote.test", msg, source="127.0.0.3")
    assert mail[0] == 250 and final[0] == 250, (mail, final)
    hdrs = headers(delivered(world, "wl@remote.test"))
    assert authres(hdrs) == [f"{AUTHSERV}; spf=none smtp.mailfrom=nospf.test; dkim=none"]
    ev = m.events("screen")
    assert [(e["verdict"], e["score"], e["reasons"]) for e in ev] == [("dnswl", -5, "wl.test=127.0.0.3*-5")]
    msgs = m.events("message")
    assert [(e["client"], e["score"], e["dnswl"]) for e in msgs] == [("127.0.0.3", -5, True)]


def test_milter_down_applies_postfix_default_action(world, milter):
    m = milter()
    assert m.stop() == 0
    assert m.events("stopped")
    assert not mxtest.port_open(world.milter_port)
    msg = message("a@src.test", "down@remote.test", "down")
    mail, final = send(world, "a@src.test", "down@remote.test", msg)
    assert final is None
    assert mail == (451, ["4.7.1 Service unavailable - try again later"]), mail
    assert not world.pf.sent("down@remote.test")


def test_parallel_sessions_each_get_their_own_results(world, milter):
    m = milter()
    n = 6
    results = [None] * n
    sigs = [None] * n

    def one(i):
        msg = message("a@src.test", f"par{i}@remote.test", f"parallel {i}")
        sigs[i] = sign(world, msg)
        results[i] = send(world, "a@src.test", f"par{i}@remote.test", sigs[i] + msg)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(n):
        mail, final = results[i]
        assert mail[0] == 250 and final[0] == 250, results[i]
        hdrs = headers(delivered(world, f"par{i}@remote.test"))
        assert authres(hdrs) == [f"{AUTHSERV}; spf=pass smtp.mailfrom=src.test; dkim=pass header.d=src.test "
                                 f"header.s={SELECTOR} header.b={token(b_prefix(sigs[i]))}"]
    assert sorted(e["action"] for e in m.events("message")) == ["accept"] * n


def test_sigterm_stops_and_open_sessions_get_postfix_default_action(world, milter):
    m = milter()
    c = connect(world.pf.port)
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<a@src.test>")[0] == 250       # Postfix holds a milter connection
        m.proc.send_signal(signal.SIGTERM)
        # libmilter serves no open connection once stopped, so the stop does not wait for them.
        assert m.proc.wait(timeout=15) == 0
        assert [e["msg"] for e in m.events("stopping")] == \
            ["1 MTA connections open: they get the MTA's milter_default_action"]
        assert m.events("stopped")
        assert c.cmd("RCPT TO:<term@remote.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(message("a@src.test", "term@remote.test", "term") + b".\r\n")
        assert c.reply() == (451, ["4.7.1 Service unavailable - try again later"])
    finally:
        c.close()
    assert not world.pf.sent("term@remote.test")
