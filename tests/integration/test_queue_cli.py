"""The operator commands `mxgate queue ...` and `mxgate repo ...` against a real queue: messages
sent through `mxgate edge`, worked by `mxgate relay` against smtp-sink (the remote MX) and dnsmasq
(its MX record), and changed or inspected with the command line."""
import base64
import json
import subprocess
import time

import pytest

import mxtest
from mxtest import send_message
from mxtest import Dnsmasq
from test_relay import Sink

PERMANENT = "remote-delivery/permanent"


class Cli:
    """Runs `mxgate -o redis.url=... ARGS` and keeps the exit status and both outputs."""

    def __init__(self, url, tmp):
        self.url = url
        self.state = str(tmp / "cli-state")

    def __call__(self, *args, url=None, text=True):
        argv = [mxtest.BIN, "-o", f"redis.url={url or self.url}", "-o", f"state_dir={self.state}"]
        p = subprocess.run(argv + list(args), capture_output=True, text=text, timeout=30)
        mxtest.check_sanitizers(p.stderr if text else p.stderr.decode(errors="replace"),
                                "mxgate " + " ".join(args))
        return p

    def ok(self, *args):
        p = self(*args)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p.stdout

    def json(self, *args):
        return [json.loads(line) for line in self.ok(*args, "--json").splitlines()]


@pytest.fixture
def world(tmp_path, redis_server, edge_factory):
    """DNS for remote.test with a sink as its MX, an edge relaying for loopback, the CLI, and a
    relay started on demand (retries after an hour unless told otherwise)."""
    dns = Dnsmasq(tmp_path, ["--mx-host=remote.test,mx.remote.test,10",
                             "--host-record=mx.remote.test,127.0.0.1"])
    sink = Sink()
    edge = edge_factory({"edge.trusted_networks": "127.0.0.0/8"})
    relays = []

    def relay(extra=None):
        o = {"dns.servers": f"127.0.0.1:{dns.port}", "relay.mx_port": str(sink.port),
             "relay.retry_schedule": "1h", "relay.retry_jitter": "0", "relay.poll": "100ms",
             "relay.lease": "10s"}
        o.update(extra or {})
        r = mxtest.start_role(tmp_path / f"relay{len(relays)}", redis_server.url, o)
        relays.append(r)
        return r

    class World:
        pass
    w = World()
    w.dns, w.sink, w.edge, w.relay, w.redis = dns, sink, edge, relay, redis_server
    w.r = redis_server.client
    w.cli = Cli(redis_server.url, tmp_path)
    yield w
    from conftest import stop_all
    stop_all([r.stop for r in relays] + [sink.remove, dns.stop])


def send(w, sender, rcpts, subject="test"):
    code, lines = send_message(w.edge.port, sender, rcpts,
                               f"Subject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n".encode())
    assert code == 250, lines
    return lines[-1].split()[-1]


def ids(rows):
    return [row["id"] for row in rows]


def keys_of(r, qid):
    """Every key of the message, and every schedule or repository set still naming it."""
    found = [k.decode() for k in r.keys(f"*{qid}*")]
    for k in r.keys("mxg:*"):
        t = r.type(k)
        if t == b"zset":
            found += [f"{k.decode()} {m.decode()}" for m in r.zrange(k, 0, -1) if qid in m.decode()]
        elif t == b"hash" and not k.decode().startswith(("mxg:msg:", "mxg:rcpt:")):
            found += [f"{k.decode()} {f.decode()}" for f in r.hkeys(k) if qid in f.decode()]
    return found


def test_list_filters_and_states(world):
    w = world
    w.sink.restart(["-r", "RCPT"])                      # 450: deferred for an hour
    relay = w.relay()
    m1 = send(w, "alice@src.test", ["bob@remote.test"], "m1")
    mxtest.wait_for(lambda: relay.events("deferred"), what="m1 deferred")
    relay.stop()
    m2 = send(w, "carol@src.test", ["dave@other.test", "erin@Remote.TEST"], "m2")
    # Queue ids sort by their millisecond first: two messages of the same one sort at random.
    time.sleep(0.005)
    m3 = send(w, "", ["frank@remote.test"], "m3")
    assert w.cli.ok("queue", "hold", m3) == f"{m3}: 1 recipient held\n"

    rows = w.cli.json("queue", "list")
    assert ids(rows) == [m1, m2, m3]                    # oldest first
    r1, r2, r3 = rows
    assert r1["sender"] == "alice@src.test" and r3["sender"] == ""
    assert r1["size"] > 0 and 0 <= r1["age_ms"] < 60000
    assert [(x["to"], x["state"], x["attempts"]) for x in r1["rcpts"]] == [("bob@remote.test", "deferred", 1)]
    due = w.r.zscore("mxg:due", f"{m1}/0")
    assert r1["rcpts"][0]["due"] == due and due > time.time() * 1000 + 3500 * 1000
    assert [(x["to"], x["state"]) for x in r2["rcpts"]] == [("dave@other.test", "pending"),
                                                            ("erin@Remote.TEST", "pending")]
    assert [x["state"] for x in r3["rcpts"]] == ["held"]

    assert ids(w.cli.json("queue", "list", "--sender", "alice@src.test")) == [m1]
    assert ids(w.cli.json("queue", "list", "--sender", "<alice@SRC.TEST>")) == [m1]
    assert ids(w.cli.json("queue", "list", "--sender", "Alice@src.test")) == []
    assert ids(w.cli.json("queue", "list", "--sender", "")) == [m3]
    assert ids(w.cli.json("queue", "list", "--sender", "<>")) == [m3]
    assert ids(w.cli.json("queue", "list", "--rcpt", "erin@remote.test")) == [m2]
    assert ids(w.cli.json("queue", "list", "--rcpt", "bob@remote.test")) == [m1]
    assert ids(w.cli.json("queue", "list", "--domain", "REMOTE.test")) == [m1, m2, m3]
    assert ids(w.cli.json("queue", "list", "--domain", "other.test")) == [m2]
    assert ids(w.cli.json("queue", "list", "--state", "deferred")) == [m1]
    assert ids(w.cli.json("queue", "list", "--state", "pending")) == [m2]
    assert ids(w.cli.json("queue", "list", "--state", "held")) == [m3]
    assert ids(w.cli.json("queue", "list", "--state", "failed")) == []
    # Recipient filters apply to one recipient together.
    assert ids(w.cli.json("queue", "list", "--domain", "other.test", "--state", "pending")) == [m2]
    assert ids(w.cli.json("queue", "list", "--domain", "other.test", "--state", "deferred")) == []
    assert ids(w.cli.json("queue", "list", "--limit", "2")) == [m1, m2]
    assert ids(w.cli.json("queue", "list", "--domain", "remote.test", "--limit=1", "--state", "held")) == [m3]

    text = w.cli.ok("queue", "list").splitlines()
    assert len(text) == 4 and text[-1] == "-- 3 messages"
    assert text[0].startswith(m1 + "  ") and "<alice@src.test>" in text[0]
    assert "bob@remote.test deferred (due in 59m" in text[0]
    assert "dave@other.test pending (due now); erin@Remote.TEST pending (due now)" in text[1]
    assert text[2].endswith("<>  frank@remote.test held")
    assert w.cli.ok("queue", "list", "--state", "inflight") == "-- 0 messages\n"


def test_show_envelope_recipients_and_history(world):
    w = world
    w.sink.restart(["-r", "RCPT"])
    relay = w.relay()
    qid = send(w, "alice@src.test", ["bob@remote.test", "carol@remote.test"], "shown")
    mxtest.wait_for(lambda: len(relay.events("deferred")) == 2, what="two deferrals")
    [o] = w.cli.json("queue", "show", qid)
    assert o["id"] == qid
    env = o["envelope"]
    assert env["sender"] == "alice@src.test" and env["nrcpt"] == "2" and env["listener"] == "mx"
    assert env["client_ip"] == "127.0.0.1" and env["client_helo"] == "client.test"
    assert [r["to"] for r in o["rcpts"]] == ["bob@remote.test", "carol@remote.test"]
    for i, r in enumerate(o["rcpts"]):
        assert r["index"] == i and r["state"] == "deferred" and r["attempts"] == 1
        assert r["due"] == w.r.zscore("mxg:due", f"{qid}/{i}")
        assert r["last"]["code"] == 450 and r["last"]["mx"] == "mx.remote.test"
        assert r["last"]["ts"] > 0
    assert [e["event"] for e in o["log"]] == ["enqueued", "deferred", "deferred"]
    assert "body" not in o

    text = w.cli.ok("queue", "show", qid)
    assert text.startswith(f"message     {qid}\nsender      <alice@src.test>\nreceived_ms ")
    assert "recipient 0  <bob@remote.test>\n  state       deferred, attempts 1, due " in text
    assert "  last reply  " in text and " from mx.remote.test: 450 " in text
    hist = text[text.index("history\n"):].splitlines()
    assert [line.split()[1] for line in hist[1:]] == ["enqueued", "deferred", "deferred"]
    assert "rcpt=0 to=bob@remote.test code=450" in hist[2]
    assert "body" not in hist

    p = w.cli("queue", "show", qid, "--body", text=False)
    assert p.returncode == 0
    assert p.stdout == text.encode() + b"body\n" + w.r.get(f"mxg:body:{{{qid}}}")
    assert p.stdout.endswith(b"\r\nSubject: shown\r\n\r\nbody of shown\r\n")
    [o] = w.cli.json("queue", "show", "--body", qid)
    assert o["body"] == w.r.get(f"mxg:body:{{{qid}}}").decode()


def test_delete_removes_every_key_and_member(world):
    w = world
    w.sink.restart(["-f", "RCPT"])                      # 500: the remote recipient fails
    relay = w.relay()
    # One message with a failed recipient (repository), a local one (local stage) and, sent
    # while the relay is stopped, a pending one; plus a held message.
    qid = send(w, "", ["x@remote.test", "y@local.test"], "everywhere")
    mxtest.wait_for(lambda: relay.events("failed") and relay.events("routed"), what="routed and failed")
    relay.stop()
    assert w.r.zscore(f"mxg:repo:{PERMANENT}", qid) is not None
    assert w.r.zscore("mxg:local:due", f"{qid}/1") is not None
    assert w.cli.ok("queue", "hold", qid) == f"{qid}: 1 recipient held\n"
    assert w.r.zscore("mxg:hold", f"{qid}/1") is not None
    other = send(w, "a@src.test", ["p@remote.test", "q@remote.test"], "pending")
    assert w.cli.json("queue", "hold", other) == [
        {"id": other, "held": 2, "inflight": 0, "already_held": 0}]
    assert w.cli.json("queue", "hold", other) == [
        {"id": other, "held": 0, "inflight": 0, "already_held": 2}]
    keep = send(w, "a@src.test", ["k@remote.test"], "kept")

    assert w.cli.ok("queue", "delete", qid) == f"{qid} deleted\n"
    assert keys_of(w.r, qid) == []
    assert w.cli.json("queue", "delete", other) == [{"id": other, "deleted": True, "inflight": 0}]
    assert keys_of(w.r, other) == []
    assert w.r.zcard(f"mxg:repo:{PERMANENT}") == 0 and w.r.zcard("mxg:hold") == 0
    assert w.r.zcard("mxg:local:due") == 0
    assert ids(w.cli.json("queue", "list")) == [keep]
    assert w.r.zscore("mxg:due", f"{keep}/0") is not None


def test_delete_in_flight_is_not_recorded_by_the_relay(world):
    w = world
    w.sink.restart(["-w", "3"])                         # waits 3 s before answering DATA
    relay = w.relay()
    qid = send(w, "a@src.test", ["slow@remote.test"], "slow")
    mxtest.wait_for(lambda: w.r.zscore("mxg:lease", f"{qid}/0") is not None, what="claimed")
    assert ids(w.cli.json("queue", "list", "--state", "inflight")) == [qid]
    [row] = w.cli.json("queue", "list")
    assert row["rcpts"][0]["state"] == "inflight" and "due" not in row["rcpts"][0]
    [o] = w.cli.json("queue", "show", qid)
    assert o["rcpts"][0]["state"] == "inflight" and o["rcpts"][0]["lease_until"] > 0
    assert w.cli.ok("queue", "hold", qid) == f"{qid}: 0 recipients held, 1 in flight left alone\n"
    assert w.cli.ok("queue", "flush", qid) == "0 recipients made due now\n"
    out = w.cli.ok("queue", "delete", qid)
    assert out == f"{qid} deleted (1 recipient was in flight: that delivery goes on, its outcome is not recorded)\n"
    assert keys_of(w.r, qid) == []
    # The delivery finishes; its outcome finds no claim and writes nothing.
    mxtest.wait_for(lambda: relay.events("delivered"), timeout=15, what="delivery finished")
    assert relay.events("delivered")[0]["queue"] == "stale"
    time.sleep(0.3)
    assert keys_of(w.r, qid) == []


def test_flush_makes_deferred_recipients_due_now(world):
    w = world
    w.sink.restart(["-r", "RCPT"])
    relay = w.relay()
    a = send(w, "a@src.test", ["one@remote.test"], "first")
    b = send(w, "a@src.test", ["two@remote.test"], "second")
    mxtest.wait_for(lambda: len(relay.events("deferred")) == 2, what="deferred")
    w.sink.restart([])
    time.sleep(0.5)
    assert w.sink.dumps() == []                         # nothing is due before an hour
    due_b = w.r.zscore("mxg:due", f"{b}/0")
    assert w.cli.json("queue", "flush", a) == [{"flushed": 1}]
    mxtest.wait_for(lambda: len(w.sink.dumps()) == 1, what="a delivered")
    assert b"Subject: first" in w.sink.dumps()[0]
    assert w.r.zscore("mxg:due", f"{b}/0") == due_b      # only the message given
    assert w.cli.ok("queue", "flush") == "1 recipient made due now\n"
    mxtest.wait_for(lambda: len(w.sink.dumps()) == 2, what="b delivered")
    mxtest.wait_for(lambda: mxtest.queued_ids(w.r) == [], what="queue empty")
    for qid in (a, b):
        events = [json.loads(e)["event"] for e in w.r.lrange(f"mxg:log:{{{qid}}}", 0, -1)]
        assert events == ["enqueued", "deferred", "flushed", "delivered"]
    assert w.cli.ok("queue", "flush") == "0 recipients made due now\n"


def test_hold_and_release(world):
    w = world
    qid = send(w, "a@src.test", ["held@remote.test"], "held")
    assert w.cli.ok("queue", "hold", qid) == f"{qid}: 1 recipient held\n"
    rec = json.loads(w.r.hget(f"mxg:rcpt:{{{qid}}}", "0"))
    assert rec["state"] == "held" and rec["held_state"] == "pending" and "due" not in rec
    w.relay()
    time.sleep(1.5)
    assert w.sink.dumps() == []                          # not delivered while held
    assert ids(w.cli.json("queue", "list", "--state", "held")) == [qid]
    assert w.cli.json("queue", "release", qid) == [{"id": qid, "released": 1}]
    mxtest.wait_for(lambda: len(w.sink.dumps()) == 1, what="delivered after release")
    mxtest.wait_for(lambda: mxtest.queued_ids(w.r) == [], what="queue empty")
    events = [json.loads(e)["event"] for e in w.r.lrange(f"mxg:log:{{{qid}}}", 0, -1)]
    assert events == ["enqueued", "held", "released", "delivered"]


def test_release_keep_due_restores_the_old_due_time(world):
    w = world
    w.sink.restart(["-r", "RCPT"])
    relay = w.relay()
    qid = send(w, "a@src.test", ["later@remote.test"], "later")
    mxtest.wait_for(lambda: relay.events("deferred"), what="deferred")
    due = w.r.zscore("mxg:due", f"{qid}/0")
    assert w.cli.ok("queue", "hold", qid) == f"{qid}: 1 recipient held\n"
    assert w.r.zscore("mxg:due", f"{qid}/0") is None
    assert w.cli.ok("queue", "release", qid, "--keep-due") == f"{qid}: 1 recipient released\n"
    rec = json.loads(w.r.hget(f"mxg:rcpt:{{{qid}}}", "0"))
    assert w.r.zscore("mxg:due", f"{qid}/0") == due == rec["due"]
    assert rec["state"] == "deferred" and "held_due" not in rec and rec["attempts"] == 1
    assert w.cli.ok("queue", "release", qid) == f"{qid}: 0 recipients released\n"


def test_urgent_submission_is_held_and_released_into_its_set(world, edge_factory, tls_pair, auth_users):
    """A submission waits in P:due:urgent; hold and release keep it there, delete clears it."""
    w = world
    cert, key = tls_pair
    sub = edge_factory({"tls.cert": cert, "tls.key": key, "edge.auth_users": auth_users}, name="sub")
    c = mxtest.SMTP(sub.sub_port)
    mxtest.ehlo(c)
    c.starttls()
    mxtest.ehlo(c)
    auth = base64.b64encode(b"\0alice\0secret-alice").decode()
    mxtest.expect(c.cmd(f"AUTH PLAIN {auth}"), 235)
    mxtest.expect(c.cmd("MAIL FROM:<alice@src.test>"), 250)
    mxtest.expect(c.cmd("RCPT TO:<urgent@remote.test>"), 250)
    mxtest.expect(c.cmd("DATA"), 354)
    qid = mxtest.queued_id(c.cmd("Subject: urgent\r\n\r\nnow\r\n."))
    c.close()
    due = w.r.zscore("mxg:due:urgent", f"{qid}/0")
    assert due is not None and w.r.zscore("mxg:due", f"{qid}/0") is None
    [row] = w.cli.json("queue", "list")
    assert row["rcpts"][0]["urgent"] is True and row["rcpts"][0]["state"] == "pending"
    assert "urgent@remote.test pending (due " in w.cli.ok("queue", "list") and ", urgent)" in w.cli.ok("queue", "list")
    assert w.cli.ok("queue", "hold", qid) == f"{qid}: 1 recipient held\n"
    assert w.r.zcard("mxg:due:urgent") == 0 and w.r.zscore("mxg:hold", f"{qid}/0") is not None
    assert json.loads(w.r.hget(f"mxg:rcpt:{{{qid}}}", "0"))["held_urgent"] is True
    assert w.cli.ok("queue", "release", "--keep-due", qid) == f"{qid}: 1 recipient released\n"
    assert w.r.zscore("mxg:due:urgent", f"{qid}/0") == due and w.r.zcard("mxg:due") == 0
    rec = json.loads(w.r.hget(f"mxg:rcpt:{{{qid}}}", "0"))
    assert rec["state"] == "pending" and rec["due"] == due and "held_urgent" not in rec
    assert w.cli.ok("queue", "delete", qid) == f"{qid} deleted\n"
    assert keys_of(w.r, qid) == [] and w.r.zcard("mxg:due:urgent") == 0


def test_repositories_list_show_delete_reprocess(world):
    w = world
    w.sink.restart(["-f", "RCPT"])                      # 500 to every recipient
    relay = w.relay()
    m1 = send(w, "", ["one@remote.test"], "one")
    m2 = send(w, "", ["two@remote.test", "two-b@remote.test"], "two")
    m3 = send(w, "", ["three@remote.test"], "three")
    m4 = send(w, "", ["four@remote.test"], "four")
    mxtest.wait_for(lambda: w.r.zcard(f"mxg:repo:{PERMANENT}") == 4, what="four in the repository")

    assert w.cli.json("repo", "list") == [{"repo": PERMANENT, "count": 4}]
    assert w.cli.ok("repo", "list") == f"{PERMANENT:<40} 4\n"
    rows = w.cli.json("repo", "list", PERMANENT)
    entered = {m: w.r.zscore(f"mxg:repo:{PERMANENT}", m) for m in (m1, m2, m3, m4)}
    assert sorted(ids(rows)) == sorted(entered)
    assert [entered[m] for m in ids(rows)] == sorted(entered.values(), reverse=True)
    two = [row for row in rows if row["id"] == m2][0]
    assert two["sender"] == "" and two["entered_ms"] == entered[m2]
    assert two["rcpts"] == [{"to": "two@remote.test", "state": "failed"},
                            {"to": "two-b@remote.test", "state": "failed"}]
    last = json.loads(w.r.hget(f"mxg:rcpt:{{{m2}}}", "1"))["last"]
    assert last["code"] == 500 and two["repo_reason"] == last["text"]
    assert len(w.cli.json("repo", "list", PERMANENT, "--limit", "2")) == 2
    assert ids(w.cli.json("repo", "list", PERMANENT, "--limit", "4")) == ids(rows)
    text = w.cli.ok("repo", "list", PERMANENT).splitlines()
    first = rows[0]["id"]
    assert text[0].startswith(f"{first}  ") and "@remote.test (failed)" in text[0]
    assert f"  {m2}  " not in text and any(line.startswith(f"{m2}  ") and
        "two@remote.test (failed), two-b@remote.test (failed)  " + last["text"] in line for line in text)
    assert text[-1] == "-- 4 messages"

    [o] = w.cli.json("repo", "show", PERMANENT, m1)
    assert o["envelope"]["repo"] == PERMANENT and o["rcpts"][0]["state"] == "failed"
    assert o["rcpts"][0]["last"]["code"] == 500
    p = w.cli("repo", "show", "remote-delivery/temporary", m1)
    assert p.returncode == 1 and f"no message {m1} in repository remote-delivery/temporary" in p.stderr

    assert w.cli.ok("repo", "delete", PERMANENT, m1) == f"{m1} deleted\n"
    assert keys_of(w.r, m1) == []
    p = w.cli("repo", "delete", PERMANENT, m1)
    assert p.returncode == 1 and f"no message {m1} in repository {PERMANENT}" in p.stderr

    w.sink.restart([])                                  # the remote accepts again
    assert w.cli.ok("repo", "reprocess", PERMANENT, m2) == f"{m2}: 2 recipients reprocessed into stage main\n"
    mxtest.wait_for(lambda: len(w.sink.dumps()) == 1, what="m2 delivered")
    mxtest.wait_for(lambda: w.r.exists(f"mxg:msg:{{{m2}}}") == 0, what="m2 removed")
    assert w.r.zscore(f"mxg:repo:{PERMANENT}", m2) is None
    events = [json.loads(e) for e in w.r.lrange(f"mxg:log:{{{m2}}}", 0, -1)]
    assert [e["event"] for e in events] == ["enqueued", "failed", "failed", "reprocessed",
                                            "delivered", "delivered"]
    assert events[3]["repo"] == PERMANENT and events[3]["count"] == 2

    # Into the local stage: the record says so, and the relay leaves it to the bridge.
    assert w.cli.json("repo", "reprocess", PERMANENT, m3, "--stage", "local") == [
        {"id": m3, "reprocessed": 1, "stage": "local", "removed": False}]
    rec = json.loads(w.r.hget(f"mxg:rcpt:{{{m3}}}", "0"))
    assert rec["state"] == "pending" and rec["reprocessed"] is True and rec["attempts"] == 1
    assert rec["stage"] == "local" and rec["due"] == w.r.zscore("mxg:local:due", f"{m3}/0")
    env = {k.decode(): v for k, v in w.r.hgetall(f"mxg:msg:{{{m3}}}").items()}
    assert "repo" not in env and "repo_reason" not in env

    assert w.cli.ok("repo", "reprocess", PERMANENT, "--all") == f"{m4}: 1 recipient reprocessed into stage main\n"
    mxtest.wait_for(lambda: len(w.sink.dumps()) == 2, what="m4 delivered")
    mxtest.wait_for(lambda: w.r.exists(f"mxg:msg:{{{m4}}}") == 0, what="m4 removed")
    assert w.r.zcard(f"mxg:repo:{PERMANENT}") == 0
    assert w.cli.ok("repo", "list") == "no repositories\n"
    assert ids(w.cli.json("queue", "list")) == [m3]
    mxtest.wait_for(lambda: len(relay.events("delivered")) == 3, what="three deliveries logged")


def test_repo_delete_all(world):
    w = world
    w.sink.restart(["-f", "RCPT"])
    w.relay()
    a = send(w, "", ["a@remote.test"], "a")
    b = send(w, "", ["b@remote.test"], "b")
    mxtest.wait_for(lambda: w.r.zcard(f"mxg:repo:{PERMANENT}") == 2, what="two in the repository")
    out = w.cli.json("repo", "delete", PERMANENT, "--all")
    assert sorted(ids(out)) == sorted([a, b]) and all(o["deleted"] for o in out)
    assert keys_of(w.r, a) == [] and keys_of(w.r, b) == []
    assert mxtest.queued_ids(w.r) == []


def test_errors(redis_server, tmp_path):
    cli = Cli(redis_server.url, tmp_path)
    unknown = "0" * 20

    def fails(rc, text, *args):
        p = cli(*args)
        assert p.returncode == rc, (args, p.stdout, p.stderr)
        assert text in p.stderr, (args, p.stderr)
        assert p.stdout == ""

    fails(1, f"mxgate queue show: no message {unknown} in the queue", "queue", "show", unknown)
    fails(1, f"mxgate queue delete: no message {unknown} in the queue", "queue", "delete", unknown)
    fails(1, f"mxgate queue hold: no message {unknown} in the queue", "queue", "hold", unknown)
    fails(1, f"mxgate queue release: no message {unknown} in the queue", "queue", "release", unknown)
    fails(1, f"mxgate queue flush: no message {unknown} in the queue", "queue", "flush", unknown)
    fails(1, f"no message {unknown} in repository remote-delivery/permanent",
          "repo", "reprocess", PERMANENT, unknown)
    fails(2, "mxgate queue list: unknown option '--bogus'", "queue", "list", "--bogus")
    fails(2, "unknown option '--sender'", "queue", "show", unknown, "--sender", "x")
    fails(2, "option '--limit' needs a value", "queue", "list", "--limit")
    fails(2, "--limit: 'ten' is not a positive number", "queue", "list", "--limit", "ten")
    fails(2, "--state: 'stuck' is not one of", "queue", "list", "--state", "stuck")
    fails(2, "'not-an-id' is not a queue id", "queue", "delete", "not-an-id")
    fails(2, "mxgate queue show: needs at least one queue id", "queue", "show")
    fails(2, "mxgate queue: unknown subcommand 'purge'", "queue", "purge")
    fails(2, "mxgate queue: needs a subcommand", "queue")
    fails(2, "mxgate repo reprocess: --stage: unknown stage 'mars'", "repo", "reprocess", PERMANENT,
          "--all", "--stage", "mars")
    fails(2, "needs queue ids or --all", "repo", "delete", PERMANENT)
    fails(2, "takes queue ids or --all, not both", "repo", "delete", PERMANENT, unknown, "--all")
    fails(2, "unexpected argument 'extra'", "queue", "list", "extra")
    # Redis down: a clear message, exit 1, for reads and changes alike.
    down = "unix:" + str(tmp_path / "nothing-here.sock")
    for args in (("queue", "list"), ("queue", "delete", unknown), ("repo", "list")):
        p = cli(*args, url=down)
        assert p.returncode == 1 and p.stdout == ""
        assert f"mxgate {' '.join(args[:2])}: cannot connect to Redis: redis {down}: " in p.stderr
    # An empty queue lists as empty.
    assert cli.ok("queue", "list") == "-- 0 messages\n"
    assert cli.json("queue", "list") == []
    assert cli.ok("repo", "list") == "no repositories\n"
