"""Relay policy and the local recipient lookup.

An untrusted, unauthenticated client may only send to local domains, and only with a plain local
part: the open-relay list of the issue (other domains, %-hack, bang path, source route, quoted
local part with an @, address literal) is refused 554 5.7.1. Trusted networks may relay. With
local.recipients set, unknown local users get 550 5.1.1. Domains match case-insensitively.
"""
import pytest

from mxtest import SMTP, ehlo, expect, message, queued_id, queued_ids, replies


OPEN_RELAY = [
    "u@ext.test",
    "u%ext.test@local.test",
    "ext.test!u@local.test",
    "@local.test:u@ext.test",
    '"u@ext.test"@local.test',
    "u@[192.0.2.1]",
    "u@[IPv6:2001:db8::1]",
    "u@local.test.ext.test",
]


def in_tx(c, sender="s@ext.test"):
    ehlo(c)
    expect(c.cmd(f"MAIL FROM:<{sender}>"), 250, "2.1.0")


@pytest.mark.parametrize("rcpt", OPEN_RELAY)
def test_untrusted_client_cannot_relay(edge, connect, rcpt):
    c = connect(edge.port)
    in_tx(c)
    lines = expect(c.cmd(f"RCPT TO:<{rcpt}>"), 554, "5.7.1", "Relay access denied")
    assert lines[-1].startswith("5.7.1 <")
    # The refusal does not end the transaction: a local recipient is still fine.
    expect(c.cmd("RCPT TO:<u@local.test>"), 250, "2.1.5")


def test_refused_recipients_are_not_queued(edge, connect, redis_server):
    c = connect(edge.port)
    in_tx(c)
    c.send("".join(f"RCPT TO:<{r}>\r\n" for r in OPEN_RELAY[:6]) + "RCPT TO:<u@local.test>\r\n")
    rs = replies(c, 7)
    for x in rs[:6]:
        expect(x, 554, "5.7.1")
    expect(rs[6], 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send("Subject: p\r\n\r\nx\r\n.\r\n")
    qid = queued_id(c.reply())
    _, _, rcpts = message(redis_server.client, qid)
    assert [x["to"] for x in rcpts] == ["u@local.test"]
    assert queued_ids(redis_server.client) == [qid]


def test_no_valid_recipient_no_data(edge, connect, redis_server):
    c = connect(edge.port)
    in_tx(c)
    expect(c.cmd("RCPT TO:<u@ext.test>"), 554, "5.7.1")
    expect(c.cmd("DATA"), 554, "5.5.1")
    assert queued_ids(redis_server.client) == []


def test_local_recipients_accepted(edge, connect):
    c = connect(edge.port)
    in_tx(c)
    for r in ["u@local.test", "anyone@example.test", "first.last+tag@local.test",
              "U@LOCAL.TEST", "u@Local.Test", "postmaster@EXAMPLE.test"]:
        expect(c.cmd(f"RCPT TO:<{r}>"), 250, "2.1.5")


def test_trusted_network_may_relay(edge_factory, connect, redis_server):
    m = edge_factory({"edge.trusted_networks": "127.0.0.0/8"})
    c = connect(m.port)
    in_tx(c)
    expect(c.cmd("RCPT TO:<u@ext.test>"), 250, "2.1.5")
    expect(c.cmd("RCPT TO:<v@[192.0.2.1]>"), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send("Subject: relay\r\n\r\nx\r\n.\r\n")
    qid = queued_id(c.reply())
    env, _, rcpts = message(redis_server.client, qid)
    assert [x["to"] for x in rcpts] == ["u@ext.test", "v@[192.0.2.1]"]
    assert "auth_user" not in env


def test_other_trusted_network_does_not_cover_us(edge_factory, connect):
    m = edge_factory({"edge.trusted_networks": "192.0.2.0/24, 2001:db8::/32"})
    c = connect(m.port)
    in_tx(c)
    expect(c.cmd("RCPT TO:<u@ext.test>"), 554, "5.7.1")


@pytest.fixture
def recipients_file(tmp_path):
    p = tmp_path / "recipients"
    p.write_text("# local users\nalice@local.test\n\n@example.test\n")
    return str(p)


def test_local_recipients_file(edge_factory, connect, redis_server, recipients_file):
    m = edge_factory({"local.recipients": recipients_file})
    c = connect(m.port)
    in_tx(c)
    expect(c.cmd("RCPT TO:<alice@local.test>"), 250, "2.1.5")
    expect(c.cmd("RCPT TO:<bob@local.test>"), 550, "5.1.1", "User unknown")
    expect(c.cmd("RCPT TO:<anyone@example.test>"), 250, "2.1.5")
    expect(c.cmd("RCPT TO:<alice@LOCAL.TEST>"), 250, "2.1.5")
    expect(c.cmd("RCPT TO:<other@EXAMPLE.TEST>"), 250, "2.1.5")
    # The file does not make other domains local.
    expect(c.cmd("RCPT TO:<u@ext.test>"), 554, "5.7.1")
    expect(c.cmd("DATA"), 354)
    c.send("Subject: f\r\n\r\nx\r\n.\r\n")
    qid = queued_id(c.reply())
    _, _, rcpts = message(redis_server.client, qid)
    assert [x["to"] for x in rcpts] == ["alice@local.test", "anyone@example.test",
                                        "alice@LOCAL.TEST", "other@EXAMPLE.TEST"]


def test_trusted_client_still_meets_the_recipient_check(edge_factory, connect, recipients_file):
    m = edge_factory({"local.recipients": recipients_file, "edge.trusted_networks": "127.0.0.1/32"})
    c = connect(m.port)
    in_tx(c)
    expect(c.cmd("RCPT TO:<bob@local.test>"), 550, "5.1.1")
    expect(c.cmd("RCPT TO:<bob@ext.test>"), 250, "2.1.5")


def test_bad_recipients_file_stops_start_up(edge_factory, tmp_path):
    bad = tmp_path / "bad-recipients"
    bad.write_text("alice@local.test\nnot an address\n")
    with pytest.raises(AssertionError, match="not an address"):
        edge_factory({"local.recipients": str(bad)})
