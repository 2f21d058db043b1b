"""The relay's outbound STARTTLS against a real Postfix smtpd: a private instance in a temp dir on a
free loopback port, with its own self-signed certificate, relaying what it accepts to smtp-sink.
dnsmasq points the test domains' MX at 127.0.0.1 and relay.mx_port is Postfix's port.

Covers relay.tls encrypt (delivered over TLS, Postfix logs the TLS session), verify (a self-signed
certificate defers; relay.domain_tls=<domain>:encrypt delivers) and the opportunistic plaintext
retry after a failed "may" handshake (Postfix announces STARTTLS but only speaks TLS 1.0 and 1.1,
which the relay's client refuses), where encrypt defers instead.
"""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import mxtest
from mxtest import queued_ids, send_message
from mxtest import Dnsmasq
from test_relay import Sink, relay_overrides

MASTER_CF = """{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
tlsmgr unix - - n 1000? 1 tlsmgr
"""


class Postfix:
    """A private Postfix smtpd with STARTTLS (its own self-signed certificate for mx.remote.test),
    relaying everything to the sink; no local delivery. `tls` adds main.cf lines."""

    def __init__(self, sink_port, tls=""):
        # Postfix's daemons run as user postfix: pytest's root-only temp dirs are closed to them.
        self.dir = tempfile.mkdtemp(prefix="mxgate-postfix-")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "conf")
        self.queue = os.path.join(self.dir, "queue")
        for d in (self.conf, self.queue, os.path.join(self.dir, "data")):
            os.makedirs(d)
        self.port = mxtest.free_port()
        self.maillog = os.path.join(self.dir, "maillog")
        self.out = os.path.join(self.dir, "postfix.out")
        self.cert, self.key = os.path.join(self.conf, "cert.pem"), os.path.join(self.conf, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
                        "-out", self.cert, "-days", "2", "-subj", "/CN=mx.remote.test",
                        "-addext", "subjectAltName=DNS:mx.remote.test"],
                       check=True, capture_output=True)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.remote.test
mydestination =
local_transport = error:no local delivery
alias_maps =
alias_database =
local_recipient_maps =
notify_classes =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_tls_security_level = none
smtpd_tls_security_level = may
smtpd_tls_cert_file = {self.cert}
smtpd_tls_key_file = {self.key}
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
biff = no
{tls}
""")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        self.pid = None

    def postfix(self, *args):
        with open(self.out, "ab") as f:
            return subprocess.run(["postfix", "-c", self.conf] + list(args), stdout=f,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=60).returncode

    def start(self):
        assert self.postfix("set-permissions") == 0, self.read(self.out)
        assert self.postfix("start") == 0, self.read(self.out) + self.read(self.maillog)
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        mxtest.wait_for(lambda: os.path.exists(pidfile), what="postfix master.pid")
        with open(pidfile) as f:
            self.pid = int(f.read().strip())
        mxtest.wait_for(lambda: mxtest.port_open(self.port), timeout=20, what="postfix smtpd")

    def stop(self):
        """`postfix stop`, then the master's pid if it is still there; the temp dir goes too."""
        try:
            self.postfix("stop")
            if self.pid:
                mxtest.wait_for(lambda: not os.path.exists(f"/proc/{self.pid}"), timeout=15,
                                what="postfix master exit")
        except (AssertionError, subprocess.SubprocessError):
            if self.pid and os.path.exists(f"/proc/{self.pid}"):
                os.kill(self.pid, 9)
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def read(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log(self):
        return self.read(self.maillog)

    def ehlo(self):
        """The EHLO keywords Postfix announces to a plaintext client on 127.0.0.1."""
        c = mxtest.SMTP(self.port)
        try:
            assert c.greeting[0] == 220
            return mxtest.ehlo(c)
        finally:
            c.close()

    def sent(self, rcpt):
        """Postfix's smtp client handed rcpt to the sink (so the sink's dump is complete)."""
        return any(f"to=<{rcpt}>, relay=127.0.0.1[127.0.0.1]" in line and "status=sent" in line
                   for line in self.log().splitlines())

    def queue_empty(self):
        return not any(files for d in ("incoming", "active", "deferred", "maildrop")
                       for _, _, files in os.walk(os.path.join(self.queue, d)))


@pytest.fixture
def tls_world(tmp_path, redis_server, edge_factory):
    """An edge relaying for loopback; dnsmasq with remote.test and strict.test at 127.0.0.1; the
    sink; `w.postfix(tls)` starts Postfix and `w.relay(overrides)` a relay aimed at it."""
    dns = Dnsmasq(tmp_path, [
        "--mx-host=remote.test,mx.remote.test,10", "--mx-host=strict.test,mx.remote.test,10",
        "--host-record=mx.remote.test,127.0.0.1"])
    sink = Sink()
    postfixes, relays = [], []

    class World:
        pass
    w = World()
    w.dns, w.sink, w.redis = dns, sink, redis_server

    def postfix(tls=""):
        p = Postfix(sink.port, tls)
        postfixes.append(p)
        p.start()
        w.pf = p
        return p

    def relay(extra=None, name="relay"):
        o = relay_overrides(dns.port, w.pf.port)
        o.update(extra or {})
        r = mxtest.start_role(tmp_path / name, redis_server.url, o)
        relays.append(r)
        return r

    w.postfix, w.relay, w.relays = postfix, relay, relays
    try:
        w.edge = edge_factory({"edge.trusted_networks": "127.0.0.0/8"})
        yield w
    finally:
        try:
            for r in relays:
                r.stop()
        finally:
            for p in postfixes:
                p.stop()
            sink.remove()
            dns.stop()


def wait(w, pred, what, timeout=20):
    """wait_for, failing with the relays' and Postfix's logs, which say why."""
    try:
        mxtest.wait_for(pred, timeout=timeout, what=what)
    except AssertionError as e:
        logs = "".join(f"\n--- {r.log_path}\n{r.read_log()[-4000:]}" for r in w.relays)
        raise AssertionError(f"{e}{logs}\n--- postfix maillog\n{w.pf.log()[-4000:]}") from None


def received_by_postfix(dump):
    """Postfix's own Received header in a sink dump (the one after the sink's), unfolded."""
    text = dump.decode("utf-8", "replace")
    i = text.index("Received: from ", text.index("Received: from ") + 1)
    end = text.index("\n", i)
    while text[end + 1] in " \t":
        end = text.index("\n", end + 1)
    return " ".join(text[i:end].split())


def test_encrypt_delivers_over_tls(tls_world):
    pf = tls_world.postfix()
    assert "STARTTLS" in pf.ehlo()
    relay = tls_world.relay({"relay.tls": "encrypt"})
    code, lines = send_message(tls_world.edge.port, "a@src.test", ["b@remote.test"],
                               b"Subject: tls\r\n\r\nover tls\r\n.\r\n")
    assert code == 250
    qid = lines[0].split()[-1]
    wait(tls_world, lambda: relay.events("delivered") and pf.sent("b@remote.test"), "delivery via postfix")
    assert len(tls_world.sink.dumps()) == 1
    delivered = relay.events("delivered")
    assert [(e["to"], e["code"]) for e in delivered] == [("b@remote.test", 250)]
    assert delivered[0]["mx"] == "mx.remote.test"
    assert relay.events("deferred") == [] and relay.events("tls-fallback") == []
    tls = relay.events("relay-tls")
    assert len(tls) == 1 and tls[0]["msg"].startswith("mx.remote.test[127.0.0.1]: TLSv1.3 with cipher ")
    # Postfix saw a TLS session from the relay and says so in its log and its Received header.
    log = pf.log()
    assert log.count("TLS connection established") == 1
    assert "Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher " in log
    assert log.count(" client=localhost[127.0.0.1]") == 1 and "from=<a@src.test>" in log
    assert "(using TLSv1.3 with cipher " in received_by_postfix(tls_world.sink.dumps()[0])
    mxtest.wait_for(lambda: queued_ids(tls_world.redis.client) == [], what="message removed")
    assert qid not in queued_ids(tls_world.redis.client)


def test_verify_defers_on_self_signed_until_domain_says_encrypt(tls_world):
    pf = tls_world.postfix()
    relay = tls_world.relay({"relay.tls": "verify"})
    code, lines = send_message(tls_world.edge.port, "a@src.test", ["b@remote.test"],
                               b"Subject: verify\r\n\r\nx\r\n.\r\n")
    assert code == 250
    qid = lines[0].split()[-1]
    wait(tls_world, lambda: relay.events("deferred"), "deferral")
    relay.stop()
    deferred = relay.events("deferred")
    assert all(e["to"] == "b@remote.test" and e["status"] == "4.7.5" for e in deferred), deferred
    assert deferred[0]["reply"] == ("mx.remote.test: TLS handshake: TLS with mx.remote.test[127.0.0.1] "
                                    "failed: certificate verify failed: self-signed certificate")
    assert [e["msg"] for e in relay.events("relay-tls-failed")][:1] == [
        "TLS with mx.remote.test[127.0.0.1] failed: certificate verify failed: self-signed certificate "
        "(policy verify)"]
    assert relay.events("delivered") == [] and relay.events("tls-fallback") == []
    # Nothing reached Postfix's queue: the handshake failed before any MAIL.
    assert tls_world.sink.dumps() == [] and pf.queue_empty()
    assert " client=localhost" not in pf.log() and "from=<a@src.test>" not in pf.log()
    rec = mxtest.message(tls_world.redis.client, qid)[2][0]
    assert rec["state"] == "deferred" and rec["attempts"] == len(deferred)
    assert (rec["last"]["code"], rec["last"]["status"]) == (0, "4.7.5")

    # The same recipient, its domain now only requiring encryption: delivered on the next retry.
    relay2 = tls_world.relay({"relay.tls": "verify", "relay.domain_tls": "remote.test:encrypt"},
                             name="relay2")
    wait(tls_world, lambda: relay2.events("delivered") and pf.sent("b@remote.test"), "delivery via postfix")
    assert len(tls_world.sink.dumps()) == 1
    assert [(e["to"], e["code"]) for e in relay2.events("delivered")] == [("b@remote.test", 250)]
    assert relay2.events("deferred") == []
    assert relay2.events("relay-tls")[0]["msg"].startswith("mx.remote.test[127.0.0.1]: TLSv1.3 with cipher ")
    assert "(using TLSv1.3 with cipher " in received_by_postfix(tls_world.sink.dumps()[0])
    assert pf.log().count("Anonymous TLS connection established from localhost[127.0.0.1]") == 1
    mxtest.wait_for(lambda: queued_ids(tls_world.redis.client) == [], what="message removed")


# Postfix offers STARTTLS but speaks only TLS 1.0 and 1.1; the relay's client wants 1.2 or later.
OLD_TLS_ONLY = """smtpd_tls_protocols = >=TLSv1, <=TLSv1.1
smtpd_tls_mandatory_protocols = >=TLSv1, <=TLSv1.1
"""


def test_failed_may_handshake_falls_back_to_plaintext_encrypt_defers(tls_world):
    pf = tls_world.postfix(OLD_TLS_ONLY)
    assert "STARTTLS" in pf.ehlo()          # else there would be no handshake to fail
    # remote.test under "may", strict.test under "encrypt", one relay, the same MX host.
    relay = tls_world.relay({"relay.tls": "may", "relay.domain_tls": "strict.test:encrypt"})
    code, _ = send_message(tls_world.edge.port, "a@src.test", ["b@remote.test"],
                           b"Subject: may\r\n\r\nplain\r\n.\r\n")
    assert code == 250
    code, lines = send_message(tls_world.edge.port, "a@src.test", ["c@strict.test"],
                               b"Subject: encrypt\r\n\r\nnever plain\r\n.\r\n")
    assert code == 250
    strict_id = lines[0].split()[-1]
    wait(tls_world, lambda: relay.events("delivered") and pf.sent("b@remote.test") and relay.events("deferred"),
         "plaintext delivery and a deferral")
    time.sleep(1.5)                         # the deferred one is retried (and deferred) again
    delivered = relay.events("delivered")
    assert [(e["to"], e["code"]) for e in delivered] == [("b@remote.test", 250)]
    fallback = relay.events("tls-fallback")
    assert len(fallback) == 1
    assert fallback[0]["msg"] == "mx.remote.test: TLS handshake failed, retrying without TLS"
    assert relay.events("relay-tls") == []
    failed_tls = [e["msg"] for e in relay.events("relay-tls-failed")]
    protocol = "TLS with mx.remote.test[127.0.0.1] failed: error:0A00042E:SSL routines::tlsv1 alert protocol version"
    assert failed_tls.count(protocol + " (policy may)") == 1
    assert failed_tls.count(protocol + " (policy encrypt)") == len(failed_tls) - 1 >= 2
    deferred = relay.events("deferred")
    assert len(deferred) >= 2
    assert all(e["to"] == "c@strict.test" and e["status"] == "4.7.5" for e in deferred), deferred
    assert {e["reply"] for e in deferred} == {"mx.remote.test: TLS handshake: " + protocol}
    # Only the "may" message reached the sink, and it came to Postfix in plaintext.
    dumps = tls_world.sink.dumps()
    assert len(dumps) == 1 and b"Subject: may" in dumps[0]
    assert "using TLS" not in received_by_postfix(dumps[0])
    log = pf.log()
    assert "TLS connection established" not in log
    assert "SSL routines::unsupported protocol" in log
    assert log.count(" client=localhost[127.0.0.1]") == 1      # one transaction: the plaintext one
    assert queued_ids(tls_world.redis.client) == [strict_id]
    rec = mxtest.message(tls_world.redis.client, strict_id)[2][0]
    assert rec["state"] == "deferred" and (rec["last"]["code"], rec["last"]["status"]) == (0, "4.7.5")
