"""The relay: the Redis queue worked end to end, against dnsmasq (MX records) and smtp-sink (the
remote MX), with `mxgate edge` and `mxgate relay` as separate processes on one Redis."""
import datetime
import email
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import mxtest
from mxtest import Dnsmasq, message, queued_ids, send_message


class Sink:
    """smtp-sink on a port, dumping each message into its own file."""

    def __init__(self, port=None, flags=()):
        # smtp-sink writes as user postfix, which cannot enter pytest's root-only temp dirs.
        self.dir = tempfile.mkdtemp(prefix="mxgate-sink-")
        os.chmod(self.dir, 0o755)
        pw = pwd.getpwnam("postfix")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.port = port or mxtest.free_port()
        self.flags = list(flags)
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "postfix", "-d", f"{self.dir}/%Y%m%d%H%M%S."] + self.flags
            + [f"127.0.0.1:{self.port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mxtest.wait_for(lambda: mxtest.port_open(self.port), what="smtp-sink")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, flags=()):
        self.stop()
        self.flags = list(flags)
        self.start()

    def dumps(self):
        out = []
        for path in sorted(glob.glob(os.path.join(self.dir, "*"))):
            with open(path, "rb") as f:
                out.append(f.read())
        return out


def dump_content(dump):
    """The message as the sink received it, after its own Received header (three lines). The sink
    writes lines ending in LF and drops a bare CR, so wire-level CR LF checks are in the unit test
    of the SMTP client (test_relay_smtp.c); here a bare CR shows up as two words run together."""
    i = dump.index(b"\nReceived: from ")
    rest = dump[i + 1:]
    end = rest.index(b"\n", rest.index(b"\n", rest.index(b"\n") + 1) + 1) + 1
    return rest[end:]


def relay_overrides(dns_port, mx_port):
    """A relay for tests: the test DNS, the test MX port, retries and polls in seconds."""
    return {
        "dns.servers": f"127.0.0.1:{dns_port}",
        "relay.mx_port": str(mx_port),
        "relay.retry_schedule": "1s",
        "relay.retry_jitter": "0",
        "relay.poll": "100ms",
        "relay.lease": "10s",
    }


@pytest.fixture
def world(tmp_path, redis_server, edge_factory):
    """DNS for remote.test and src.test, a sink as their MX, an edge that relays for loopback."""
    dns = Dnsmasq(tmp_path, [
        "--mx-host=remote.test,mx.remote.test,10",
        "--mx-host=other.test,mx.remote.test,10",
        "--host-record=mx.remote.test,127.0.0.1",
        "--mx-host=nullmx.test,.,0",
    ])
    sink = Sink()
    edge = edge_factory({"edge.trusted_networks": "127.0.0.0/8"})
    relays = []

    def relay(extra=None, name="relay"):
        o = relay_overrides(dns.port, sink.port)
        o.update(extra or {})
        r = mxtest.start_role(tmp_path / name, redis_server.url, o)
        relays.append(r)
        return r

    class World:
        pass
    w = World()
    w.dns, w.sink, w.edge, w.relay, w.redis = dns, sink, edge, relay, redis_server
    w.dns_dir = tmp_path / "dns2"
    w.dns_dir.mkdir()
    yield w
    from conftest import stop_all
    stop_all([r.stop for r in relays] + [sink.remove, lambda: w.dns.stop()])


def drained(r):
    """Nothing left to do in the main stage: no due and no leased recipients."""
    return r.zcard("mxg:due") == 0 and r.zcard("mxg:lease") == 0


def test_remote_message_is_delivered_and_removed(world):
    relay = world.relay()
    body = b"Subject: out\r\nMessage-Id: <m1@src.test>\r\n\r\nhello remote\r\n..dot\r\n"
    code, lines = send_message(world.edge.port, "alice@src.test", ["bob@remote.test", "carol@remote.test"],
                               body + b".\r\n")
    assert code == 250
    qid = lines[0].split()[-1]
    mxtest.wait_for(lambda: len(world.sink.dumps()) == 1, what="delivery to the sink")
    dump = world.sink.dumps()[0]
    assert b"X-Mail-Args: <alice@src.test>" in dump
    assert dump.count(b"X-Rcpt-Args: <") == 2           # one transaction for both recipients
    content = dump_content(dump)
    assert b"Subject: out\nMessage-Id: <m1@src.test>\n\nhello remote\n.dot\n" in content
    mxtest.wait_for(lambda: queued_ids(world.redis.client) == [], what="message removed")
    log = [__import__("json").loads(x) for x in world.redis.client.lrange(f"mxg:log:{{{qid}}}", 0, -1)]
    assert [e["event"] for e in log] == ["enqueued", "delivered", "delivered"]
    assert {e["to"] for e in log[1:]} == {"bob@remote.test", "carol@remote.test"}
    assert len(relay.events("delivered")) == 2


def test_outbound_never_sends_bare_cr_or_lf(world):
    world.relay()
    c = mxtest.SMTP(world.edge.port)
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<a@src.test>")[0] == 250
    assert c.cmd("RCPT TO:<b@remote.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: bare\r\n\r\nbare LF\nbare CR\rmixed\r\r\n.\r\n")
    assert c.reply()[0] == 250
    c.close()
    mxtest.wait_for(lambda: len(world.sink.dumps()) == 1, what="delivery")
    content = dump_content(world.sink.dumps()[0])
    assert b"\r" not in content
    assert b"bare LF\nbare CR\nmixed\n\n" in content


def test_deferred_then_delivered_on_schedule(world):
    world.sink.restart(["-r", "RCPT"])          # 450 to every RCPT
    relay = world.relay()
    code, lines = send_message(world.edge.port, "a@src.test", ["b@remote.test"], b"Subject: later\r\n\r\nx\r\n.\r\n")
    qid = lines[0].split()[-1]
    mxtest.wait_for(lambda: len(relay.events("deferred")) >= 2, timeout=15, what="two deferrals")
    rec = message(world.redis.client, qid)[2][0]
    assert rec["state"] == "deferred" and rec["attempts"] >= 2
    assert rec["last"]["code"] == 450
    assert world.redis.client.zscore("mxg:due", f"{qid}/0") == rec["due"]
    world.sink.restart([])
    mxtest.wait_for(lambda: len(world.sink.dumps()) == 1, timeout=15, what="delivery after recovery")
    mxtest.wait_for(lambda: queued_ids(world.redis.client) == [], what="message removed")


def test_permanent_failure_bounces_once(world):
    world.sink.restart(["-f", "RCPT"])          # 5xx to every RCPT
    relay = world.relay()
    code, lines = send_message(world.edge.port, "alice@local.test", ["nobody@remote.test"],
                               b"Subject: doomed\r\nMessage-Id: <doomed@local.test>\r\n\r\nbody\r\n.\r\n")
    qid = lines[0].split()[-1]
    mxtest.wait_for(lambda: relay.events("failed"), what="permanent failure")
    # The original stays in the failed-mail repository; the bounce is a new message from <>.
    r = world.redis.client
    assert r.zscore("mxg:repo:remote-delivery/permanent", qid) is not None
    mxtest.wait_for(lambda: len(queued_ids(r)) == 2, what="bounce queued")
    bounce_id = [q for q in queued_ids(r) if q != qid][0]
    env, body, rcpts = message(r, bounce_id)
    assert env["sender"] == ""
    assert [x["to"] for x in rcpts] == ["alice@local.test"]
    m = email.message_from_bytes(body)
    assert m.get_content_type() == "multipart/report"
    parts = [p.get_content_type() for p in m.walk()]
    assert "message/delivery-status" in parts
    status = [p for p in m.walk() if p.get_content_type() == "message/delivery-status"][0]
    text = status.as_bytes().decode()
    assert "Final-Recipient: rfc822;nobody@remote.test" in text
    assert "Action: failed" in text
    assert "Status: 5." in text
    assert "Remote-MTA: dns; mx.remote.test" in text
    # The bounce to a local sender is routed to the local stage, never bounced again.
    mxtest.wait_for(lambda: r.zscore("mxg:local:due", f"{bounce_id}/0") is not None, what="bounce routed local")
    assert len(relay.events("bounce-queued")) == 1


def test_null_sender_failure_produces_no_bounce(world):
    world.sink.restart(["-f", "RCPT"])
    relay = world.relay()
    code, lines = send_message(world.edge.port, "", ["nobody@remote.test"], b"Subject: dsn\r\n\r\nx\r\n.\r\n")
    assert code == 250
    mxtest.wait_for(lambda: relay.events("failed"), what="permanent failure")
    time.sleep(0.5)
    assert relay.events("bounce-queued") == []
    assert len(queued_ids(world.redis.client)) == 1     # only the original, in its repository


def test_null_mx_and_nxdomain_fail_permanently(world):
    relay = world.relay()
    send_message(world.edge.port, "", ["u@nullmx.test"], b"x\r\n.\r\n")
    send_message(world.edge.port, "", ["u@nowhere.test"], b"x\r\n.\r\n")
    mxtest.wait_for(lambda: len(relay.events("failed")) == 2, what="two failures")
    statuses = sorted(e["status"] for e in relay.events("failed"))
    assert statuses == ["5.1.10", "5.1.2"]


def test_message_too_old_fails_instead_of_retrying(world):
    world.sink.restart(["-r", "RCPT"])
    relay = world.relay({"relay.max_age": "1m"})
    code, lines = send_message(world.edge.port, "", ["b@remote.test"], b"x\r\n.\r\n")
    qid = lines[0].split()[-1]
    # Make the message look two minutes old.
    world.redis.client.hset(f"mxg:msg:{{{qid}}}", "received_ms", int(time.time() * 1000) - 120000)
    mxtest.wait_for(lambda: relay.events("failed"), timeout=15, what="failure by age")
    assert "message too old" in relay.events("failed")[0]["reply"]


def test_local_domain_goes_to_the_local_stage(world):
    relay = world.relay()
    code, lines = send_message(world.edge.port, "a@src.test", ["bob@local.test"], b"x\r\n.\r\n")
    qid = lines[0].split()[-1]
    r = world.redis.client
    mxtest.wait_for(lambda: r.zscore("mxg:local:due", f"{qid}/0") is not None, what="routed")
    assert message(r, qid)[2][0]["stage"] == "local"
    assert world.sink.dumps() == []


def message_ids(sink):
    ids = []
    for d in sink.dumps():
        for line in d.split(b"\n"):
            if line.lower().startswith(b"message-id:"):
                ids.append(line.strip())
                break
    return ids


def send_load(port, n):
    return subprocess.Popen(["smtp-source", "-s", "10", "-m", str(n), "-l", "1024", "-f", "a@src.test",
                             "-t", "b@remote.test", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_two_relays_deliver_each_recipient_exactly_once(world):
    # A small in-flight window per relay makes the two share the work.
    r1 = world.relay({"relay.max_inflight": "40"}, name="relay1")
    r2 = world.relay({"relay.max_inflight": "40"}, name="relay2")
    n = 2000
    src = send_load(world.edge.port, n)
    assert src.wait(timeout=300) == 0, src.stderr.read()
    mxtest.wait_for(lambda: drained(world.redis.client) and queued_ids(world.redis.client) == [],
                    timeout=120, what="queue drained")
    ids = message_ids(world.sink)
    assert len(ids) == n and len(set(ids)) == n
    d1, d2 = len(r1.events("delivered")), len(r2.events("delivered"))
    assert d1 + d2 == n and d1 > 0 and d2 > 0


def test_killed_relay_work_is_delivered_by_the_other(world):
    # relay1 works alone and is killed in the middle of the load, holding leased work; only then
    # does relay2 start, so everything relay1 held must come back through lease expiry. relay1
    # delivers over one connection, so that it falls behind the load and holds claimed work (a
    # relay that keeps up can hold none at the moment it dies).
    r1 = world.relay({"relay.lease": "3s", "relay.destination_concurrency": "1"}, name="relay1")
    n = 600
    src = send_load(world.edge.port, n)
    mxtest.wait_for(lambda: len(world.sink.dumps()) > n // 4
                    and world.redis.client.zcard("mxg:lease") > 0, timeout=60,
                    what="deliveries under way, with work leased")
    r1.kill9()
    leased_at_kill = world.redis.client.zcard("mxg:lease")
    assert leased_at_kill > 0
    r2 = world.relay({"relay.lease": "3s"}, name="relay2")
    assert src.wait(timeout=120) == 0, src.stderr.read()
    mxtest.wait_for(lambda: drained(world.redis.client) and queued_ids(world.redis.client) == [],
                    timeout=90, what="queue drained")
    ids = message_ids(world.sink)
    assert len(set(ids)) == n                   # nothing lost
    # Only work the killed relay held under lease can have gone out twice; the survivor says how
    # much it took over when the leases expired.
    taken_over = sum(int(e["msg"].split()[0]) for e in r2.events("leases-expired"))
    assert taken_over >= leased_at_kill
    assert len(ids) - n <= taken_over


def delivery_times(sink):
    """When the sink finished writing each message (its dump file's mtime), in order."""
    paths = glob.glob(os.path.join(sink.dir, "*"))
    return sorted(os.stat(p).st_mtime for p in paths)


def test_rate_limit_per_domain_holds(world):
    # 120 per minute = one every 0.5 s for remote.test; other domains are not limited.
    relay = world.relay({"relay.domain_limits": "remote.test:120:0"})
    n = 6
    for i in range(n):
        code, _ = send_message(world.edge.port, "", [f"u{i}@remote.test"], b"x\r\n.\r\n")
        assert code == 250
    mxtest.wait_for(lambda: len(world.sink.dumps()) == n, timeout=30, what="all delivered")
    t = delivery_times(world.sink)
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert min(gaps) >= 0.4, gaps                 # never faster than the limit (some clock slack)
    assert t[-1] - t[0] >= (n - 1) * 0.45, t      # n messages take (n-1) intervals at least
    throttled = relay.events("throttled")
    assert throttled and all(e["status"] == "4.7.0" for e in throttled)
    # A throttle delay is not an attempt.
    assert all(e["attempts"] == 0 for e in throttled)


def test_concurrency_limit_per_domain_holds(world):
    world.sink.restart(["-w", "1"])               # each DATA takes a second to answer
    relay = world.relay({"relay.concurrency_limit": "1"})
    n = 3
    for i in range(n):
        send_message(world.edge.port, "", [f"u{i}@remote.test"], b"x\r\n.\r\n")
    mxtest.wait_for(lambda: len(relay.events("delivered")) == n, timeout=30, what="all delivered")
    # One at a time: each delivery ends a full DATA delay (1 s) after the one before it.
    t = sorted(datetime.datetime.fromisoformat(e["ts"].rstrip("Z")).timestamp()
               for e in relay.events("delivered"))
    assert all(b - a >= 0.9 for a, b in zip(t, t[1:])), t
    assert relay.events("throttled")


def test_throttle_is_shared_by_two_relays(world):
    r1 = world.relay({"relay.rate_limit": "120"}, name="relay1")
    r2 = world.relay({"relay.rate_limit": "120"}, name="relay2")
    n = 6
    for i in range(n):
        send_message(world.edge.port, "", [f"u{i}@remote.test"], b"x\r\n.\r\n")
    mxtest.wait_for(lambda: len(world.sink.dumps()) == n, timeout=30, what="all delivered")
    t = delivery_times(world.sink)
    assert t[-1] - t[0] >= (n - 1) * 0.45, t      # two nodes together still one every 0.5 s


def test_single_try_keeps_temporary_failures_in_a_repository(world):
    world.sink.restart(["-r", "RCPT"])
    relay = world.relay({"relay.temporary_repository": "remote-delivery/temporary"})
    code, lines = send_message(world.edge.port, "alice@local.test", ["b@remote.test"], b"x\r\n.\r\n")
    qid = lines[0].split()[-1]
    r = world.redis.client
    mxtest.wait_for(lambda: r.zscore("mxg:repo:remote-delivery/temporary", qid) is not None,
                    what="kept in the temporary repository")
    time.sleep(1.5)                                   # longer than the retry schedule's 1 s
    assert relay.events("deferred") == []             # not retried
    assert relay.events("bounce-queued") == []        # and not bounced: it may still go out
    failed = relay.events("failed")
    assert len(failed) == 1 and failed[0]["status"].startswith("4.")
    assert queued_ids(r) == [qid]


def test_delay_warning_is_sent_once(world):
    world.sink.restart(["-r", "RCPT"])
    relay = world.relay({"relay.delay_warning": "1s"})
    code, lines = send_message(world.edge.port, "alice@local.test", ["b@remote.test"],
                               b"Subject: slow\r\n\r\nx\r\n.\r\n")
    qid = lines[0].split()[-1]
    mxtest.wait_for(lambda: len(relay.events("deferred")) >= 4, timeout=20, what="four deferrals")
    notices = relay.events("bounce-queued")
    assert len(notices) == 1
    r = world.redis.client
    notice_id = [q for q in queued_ids(r) if q != qid][0]
    env, body, rcpts = message(r, notice_id)
    assert env["sender"] == "" and rcpts[0]["to"] == "alice@local.test"
    text = body.decode()
    assert "Subject: Delayed Mail (still being retried)" in text
    assert "Action: delayed" in text and "Will-Retry-Until:" in text
    assert message(r, qid)[2][0]["warned"] is True


def test_tls_policy_per_domain(world):
    # TLS is required everywhere, except for remote.test; the sink offers no STARTTLS.
    world.dns.stop()
    world.dns = Dnsmasq(world.dns_dir, [
        "--mx-host=remote.test,mx.remote.test,10", "--mx-host=secure.test,mx.remote.test,10",
        "--host-record=mx.remote.test,127.0.0.1"])
    relay = world.relay({"relay.tls": "encrypt", "relay.domain_tls": "remote.test:none",
                         "dns.servers": f"127.0.0.1:{world.dns.port}"})
    send_message(world.edge.port, "", ["a@secure.test"], b"x\r\n.\r\n")
    send_message(world.edge.port, "", ["b@remote.test"], b"x\r\n.\r\n")
    mxtest.wait_for(lambda: relay.events("delivered") and relay.events("deferred"), what="both outcomes")
    assert [e["to"] for e in relay.events("delivered")] == ["b@remote.test"]
    deferred = relay.events("deferred")[0]
    assert deferred["to"] == "a@secure.test" and "STARTTLS" in deferred["reply"]


def test_sigterm_waits_for_deliveries_in_hand(world):
    # The sink answers DATA after 3 s, the relay gives up after 1 s: a delivery is in flight at
    # SIGTERM, and its deferral is recorded (with the retry schedule) before the relay exits.
    world.sink.restart(["-w", "3"])
    relay = world.relay({"relay.data_timeout": "1s", "relay.command_timeout": "1s"})
    code, lines = send_message(world.edge.port, "", ["b@remote.test"], b"x\r\n.\r\n")
    qid = lines[0].split()[-1]
    mxtest.wait_for(lambda: world.redis.client.zcard("mxg:lease") == 1, what="delivery in flight")
    time.sleep(0.3)
    relay.proc.send_signal(signal.SIGTERM)
    assert relay.proc.wait(timeout=20) == 0
    assert "1 recipients in delivery" in relay.events("stopping")[0]["msg"]
    assert len(relay.events("deferred")) == 1
    rec = message(world.redis.client, qid)[2][0]
    assert rec["state"] == "deferred" and rec["attempts"] == 1
    assert world.redis.client.zcard("mxg:lease") == 0


def test_mx_host_limit_holds_across_domains(world):
    # remote.test and other.test share one MX host; its limit (120/min) spaces them all.
    relay = world.relay({"relay.mx_limits": "mx.remote.test:120:0"})
    n = 6
    for i in range(n):
        domain = "remote.test" if i % 2 else "other.test"
        code, _ = send_message(world.edge.port, "", [f"u{i}@{domain}"], b"x\r\n.\r\n")
        assert code == 250
    mxtest.wait_for(lambda: len(world.sink.dumps()) == n, timeout=30, what="all delivered")
    t = delivery_times(world.sink)
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert min(gaps) >= 0.4, gaps
    assert t[-1] - t[0] >= (n - 1) * 0.45, t
    assert all("MX host" in e["reply"] for e in relay.events("throttled"))


def test_new_mail_wakes_an_idle_relay(world):
    # The relay polls once a minute (the longest relay.poll allows): after its first, empty claim
    # only the edge's PUBLISH on "mxg:wake" can make it look again within the test's bound.
    relay = world.relay({"relay.poll": "1m"})
    r = world.redis.client
    mxtest.wait_for(lambda: r.pubsub_numsub("mxg:wake")[0][1] >= 1, what="the relay subscribed")
    subscribers = [c for c in r.client_list() if c.get("name") == "mxgate-relay-wake"]
    assert len(subscribers) == 1 and subscribers[0]["sub"] == "1", r.client_list()
    time.sleep(1)                               # the first claim has found nothing
    t0 = time.monotonic()
    code, _ = send_message(world.edge.port, "a@src.test", ["b@remote.test"],
                           b"Subject: wake\r\n\r\nx\r\n.\r\n")
    assert code == 250
    mxtest.wait_for(lambda: len(world.sink.dumps()) == 1, timeout=15, what="delivery woken by new mail")
    assert time.monotonic() - t0 < 15           # the next poll was 60 s away
    assert len(relay.events("delivered")) == 1
