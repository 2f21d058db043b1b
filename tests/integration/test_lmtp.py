"""The mailbox bridge over LMTP into a real Dovecot, read back over IMAP."""
import email
import os
import subprocess

import pytest

import mxtest
from dovecot import Dovecot
from mxtest import message, queued_ids, send_message, split_received


@pytest.fixture
def tier(tmp_path, redis_server, edge_factory):
    dove = Dovecot(tmp_path / "dovecot")
    edge = edge_factory()
    o = {"relay.poll": "100ms", "relay.retry_schedule": "1s", "relay.retry_jitter": "0",
         "bridge.lmtp": f"127.0.0.1:{dove.lmtp_port}"}
    relay = mxtest.Mxgate(tmp_path / "relay", redis_server.url, o, command="relay", wait_ports=False)
    bridge = mxtest.Mxgate(tmp_path / "bridge", redis_server.url, o, command="bridge", wait_ports=False)
    yield dove, edge, relay, bridge
    from conftest import stop_all
    stop_all([relay.stop, bridge.stop, dove.stop])


def imap_content(raw):
    """What Dovecot returns, from our Received header on (its own headers come before it)."""
    i = raw.index(b"Received: from client.test")
    return raw[i:]


def test_mail_arrives_in_the_inbox_byte_identical(tier, redis_server):
    dove, edge, relay, bridge = tier
    content = (b"Subject: to the tier\r\nFrom: <a@src.test>\r\nMessage-Id: <t1@src.test>\r\n\r\n"
               b"line one\r\n..dotted\r\n\xc3\xa9t\xc3\xa9\r\nlast\r\n")
    code, lines = send_message(edge.port, "a@src.test", ["bob@local.test", "carol@local.test"],
                               content + b".\r\n")
    assert code == 250
    qid = lines[0].split()[-1]
    stored = message(redis_server.client, qid)[1]
    mxtest.wait_for(lambda: dove.inbox("bob") and dove.inbox("carol"), what="both inboxes")
    for user in ("bob", "carol"):
        [raw] = dove.inbox(user)
        assert imap_content(raw) == stored        # byte-identical, bar the headers the tier adds
    mxtest.wait_for(lambda: queued_ids(redis_server.client) == [], what="message removed")
    assert len(bridge.events("delivered")) == 2


def test_swaks_message_reads_back_over_imap(tier, tmp_path):
    """The issue's own recipe: swaks to mxgate, IMAP from Dovecot, the same bytes bar headers."""
    dove, edge, relay, bridge = tier
    content = (b"Subject: by swaks\r\nFrom: <alice@src.test>\r\nMessage-Id: <sw1@src.test>\r\n\r\n"
               b"first\r\n.leading dot\r\n\xc3\xa9\r\n")
    data = tmp_path / "msg.eml"
    data.write_bytes(content)
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{edge.port}", "--from", "alice@src.test",
                          "--to", "bob@local.test", "--helo", "client.test", "--data", str(data)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "250 2.0.0 Ok: queued as " in out.stdout, out.stdout + out.stderr
    mxtest.wait_for(lambda: dove.inbox("bob"), what="bob's inbox")
    [raw] = dove.inbox("bob")
    _, rest = split_received(imap_content(raw))
    # swaks ends the data with one more CRLF before the dot.
    assert rest == content + b"\r\n"


def test_unknown_user_is_refused_and_bounced(tier, redis_server):
    dove, edge, relay, bridge = tier
    code, lines = send_message(edge.port, "alice@local.test", ["bob@local.test", "nobody@local.test"],
                               b"Subject: two\r\n\r\nx\r\n.\r\n")
    qid = lines[0].split()[-1]
    mxtest.wait_for(lambda: bridge.events("failed") and bridge.events("delivered"), what="both fates")
    assert len(dove.inbox("bob")) == 1
    failed = bridge.events("failed")[0]
    assert failed["to"] == "nobody@local.test" and failed["code"] == 550 and failed["status"].startswith("5.1.")
    r = redis_server.client
    assert r.zscore("mxg:repo:address-error", qid) is not None
    assert len(bridge.events("bounce-queued")) == 1


def test_tier_down_defers_then_delivers(tier, redis_server):
    dove, edge, relay, bridge = tier
    dove.stop()
    code, lines = send_message(edge.port, "a@src.test", ["bob@local.test"], b"Subject: later\r\n\r\nx\r\n.\r\n")
    qid = lines[0].split()[-1]
    mxtest.wait_for(lambda: len(bridge.events("deferred")) >= 2, timeout=15, what="deferrals")
    assert message(redis_server.client, qid)[2][0]["state"] == "deferred"
    dove.start()
    mxtest.wait_for(lambda: dove.inbox("bob"), timeout=15, what="delivery after the tier is back")
    mxtest.wait_for(lambda: queued_ids(redis_server.client) == [], what="message removed")
    assert len(dove.inbox("bob")) == 1


def test_each_recipient_gets_its_own_fate(tmp_path, redis_server, edge_factory):
    """One message to three recipients: Dovecot takes bob's, defers carol's (her mailbox is over
    quota) and refuses nobody's. bob is delivered once, carol waits for a retry, nobody bounces."""
    dove = Dovecot(tmp_path / "dovecot", quota={"carol": "1K"})
    edge = edge_factory()
    o = {"relay.poll": "100ms", "relay.retry_schedule": "1h", "relay.retry_jitter": "0",
         "bridge.lmtp": f"127.0.0.1:{dove.lmtp_port}"}
    relay = mxtest.start_role(tmp_path / "relay", redis_server.url, o)
    bridge = mxtest.start_role(tmp_path / "bridge", redis_server.url, o, command="bridge")
    try:
        body = b"Subject: three fates\r\n\r\n" + (b"x" * 70 + b"\r\n") * 60 + b".\r\n"
        code, lines = send_message(edge.port, "alice@src.test",
                                   ["bob@local.test", "carol@local.test", "nobody@local.test"], body)
        assert code == 250
        qid = lines[0].split()[-1]
        mxtest.wait_for(lambda: bridge.events("delivered") and bridge.events("deferred")
                        and bridge.events("failed"), what="three fates")
        [delivered] = bridge.events("delivered")
        [deferred] = bridge.events("deferred")
        [failed] = bridge.events("failed")
        assert delivered["to"] == "bob@local.test"
        assert deferred["to"] == "carol@local.test" and deferred["code"] // 100 == 4
        assert deferred["status"].startswith("4.2.")        # mailbox full
        assert failed["to"] == "nobody@local.test" and failed["code"] == 550
        assert len(dove.inbox("bob")) == 1
        assert dove.inbox("carol") == []
        # The message stays queued for carol alone, due again on the retry schedule.
        r = redis_server.client
        _, _, rcpts = message(r, qid)
        states = {x["to"]: x["state"] for x in rcpts}
        assert states["carol@local.test"] == "deferred", rcpts
        assert states["bob@local.test"] == "delivered" and states["nobody@local.test"] == "failed"
        assert r.zscore("mxg:repo:address-error", qid) is not None
        assert len(bridge.events("bounce-queued")) == 1
    finally:
        from conftest import stop_all
        stop_all([relay.stop, bridge.stop, dove.stop])


def test_each_domain_goes_to_its_own_store(tmp_path, redis_server, edge_factory):
    """bridge.domain_lmtp sends example.test to Dovecot; local.test, with no LMTP server, lands in
    the embedded Maildirs."""
    dove = Dovecot(tmp_path / "dovecot")
    edge = edge_factory()
    state = edge.overrides["state_dir"]
    o = {"state_dir": state, "relay.poll": "100ms",
         "bridge.domain_lmtp": f"example.test=127.0.0.1:{dove.lmtp_port}"}
    relay = mxtest.start_role(tmp_path / "relay", redis_server.url, o)
    bridge = mxtest.start_role(tmp_path / "bridge", redis_server.url, o, command="bridge")
    try:
        code, _ = send_message(edge.port, "a@src.test", ["bob@example.test", "carol@local.test"],
                               b"Subject: split\r\n\r\nx\r\n.\r\n")
        assert code == 250
        mxtest.wait_for(lambda: len(bridge.events("delivered")) == 2, what="both delivered")
        assert len(dove.inbox("bob")) == 1
        assert dove.inbox("carol") == []
        maildir = os.path.join(state, "mailboxes", "carol", "Maildir", "new")
        assert len(os.listdir(maildir)) == 1
        assert not os.path.exists(os.path.join(state, "mailboxes", "bob"))
    finally:
        from conftest import stop_all
        stop_all([relay.stop, bridge.stop, dove.stop])
