"""The edge's SMTP dialogue (RFC 5321 and its extensions), spoken in raw bytes.

Commands and their replies, the EHLO keywords, MAIL/RCPT parameters (SIZE, BODY, SMTPUTF8, DSN)
and what they leave in Redis, BDAT (RFC 3030), RFC 2920 pipelining discipline, the greet pause,
and the Received header, including a hostile HELO argument.
"""
import re
import time

import pytest

from mxtest import (SMTP, ehlo, expect, message, queued_id, queued_ids, replies,
                    split_received)

EXT_PLAIN = ["PIPELINING", "SIZE 36700160", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8",
             "CHUNKING"]


def tls_overrides(tls_pair, **extra):
    cert, key = tls_pair
    d = {"tls.cert": cert, "tls.key": key}
    d.update(extra)
    return d


def start_tx(c, sender="s@ext.test", rcpts=("u@local.test",)):
    expect(c.cmd(f"MAIL FROM:<{sender}>"), 250, "2.1.0")
    for r in rcpts:
        expect(c.cmd(f"RCPT TO:<{r}>"), 250, "2.1.5")


def data(c, content):
    """DATA with content (which must end with the terminator); the queue id."""
    expect(c.cmd("DATA"), 354)
    c.send(content)
    return queued_id(c.reply())


# ---- greeting, EHLO, HELO ------------------------------------------------------------------

def test_greeting_names_the_host(edge, connect):
    c = connect(edge.port)
    assert c.greeting == (220, ["mx.test ESMTP mxgate"])


def test_ehlo_keywords_without_certificate(edge, connect):
    c = connect(edge.port)
    code, lines = c.cmd("EHLO client.test")
    assert code == 250
    assert lines == ["mx.test"] + EXT_PLAIN


def test_ehlo_size_follows_the_limit(edge_factory, connect):
    m = edge_factory({"edge.message_size_limit": "1k"})
    c = connect(m.port)
    assert "SIZE 1024" in ehlo(c)


def test_ehlo_keywords_with_certificate_on_mx(edge_factory, connect, tls_pair, auth_users):
    m = edge_factory(tls_overrides(tls_pair, **{"edge.auth_users": auth_users}))
    c = connect(m.port)
    want = ["PIPELINING", "SIZE 36700160", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
            "SMTPUTF8", "CHUNKING"]
    assert ehlo(c) == want
    c.starttls()
    # AUTH is never offered on the MX port, not even over TLS.
    assert ehlo(c) == EXT_PLAIN


def test_ehlo_auth_only_on_submission_after_tls(edge_factory, connect, tls_pair, auth_users):
    m = edge_factory(tls_overrides(tls_pair, **{"edge.auth_users": auth_users}))
    c = connect(m.sub_port)
    assert c.greeting == (220, ["mx.test ESMTP mxgate"])
    before = ehlo(c)
    assert "STARTTLS" in before
    assert not any(k.startswith("AUTH") for k in before)
    c.starttls()
    after = ehlo(c)
    assert after == ["PIPELINING", "SIZE 36700160", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES",
                     "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]


def test_helo(edge, connect, redis_server):
    c = connect(edge.port)
    assert c.cmd("HELO client.test") == (250, ["mx.test"])
    # A plain SMTP client may still send mail, one command at a time.
    start_tx(c)
    qid = data(c, "Subject: helo\r\n\r\nhi\r\n.\r\n")
    env, body, _ = message(redis_server.client, qid)
    assert env["client_helo"] == "client.test"
    assert b"\tby mx.test (mxgate) with SMTP id " + qid.encode() in body


def test_helo_and_ehlo_need_an_argument(edge, connect):
    c = connect(edge.port)
    expect(c.cmd("HELO"), 501, "5.5.4")
    expect(c.cmd("EHLO"), 501, "5.5.4")


# ---- command order and simple commands ---------------------------------------------------------

def test_mail_before_helo(edge, connect):
    c = connect(edge.port)
    expect(c.cmd("MAIL FROM:<a@b.test>"), 503, "5.5.1")


def test_rcpt_before_mail(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("RCPT TO:<u@local.test>"), 503, "5.5.1")


def test_data_without_mail_or_rcpt(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("DATA"), 503, "5.5.1")
    expect(c.cmd("MAIL FROM:<a@b.test>"), 250, "2.1.0")
    expect(c.cmd("DATA"), 554, "5.5.1")
    # Still in command mode: the next line is a command, not content.
    expect(c.cmd("NOOP"), 250, "2.0.0")
    assert queued_ids(redis_server.client) == []


def test_nested_mail(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@b.test>"), 250, "2.1.0")
    expect(c.cmd("MAIL FROM:<a@b.test>"), 503, "5.5.1")


def test_rset_frees_the_transaction(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c, "first@ext.test", ["one@local.test"])
    expect(c.cmd("RSET"), 250, "2.0.0")
    expect(c.cmd("RCPT TO:<u@local.test>"), 503, "5.5.1")
    expect(c.cmd("DATA"), 503, "5.5.1")
    # A new MAIL is not "nested": the old transaction is gone, and so are its recipients.
    start_tx(c, "second@ext.test", ["two@local.test"])
    qid = data(c, "Subject: r\r\n\r\nx\r\n.\r\n")
    env, _, rcpts = message(redis_server.client, qid)
    assert env["sender"] == "second@ext.test"
    assert [r["to"] for r in rcpts] == ["two@local.test"]
    assert queued_ids(redis_server.client) == [qid]


def test_rset_with_argument(edge, connect):
    c = connect(edge.port)
    expect(c.cmd("RSET x"), 501, "5.5.4")


def test_noop_vrfy_help(edge, connect):
    c = connect(edge.port)
    expect(c.cmd("NOOP"), 250, "2.0.0")
    expect(c.cmd("VRFY u@local.test"), 252, "2.0.0")
    expect(c.cmd("VRFY"), 501, "5.5.4")
    code, lines = c.cmd("HELP")
    assert code == 214
    assert len(lines) == 2 and all(line.startswith("2.0.0 ") for line in lines)
    assert "EHLO" in lines[0] and "BDAT" in lines[0]


def test_expn_and_unknown_command(edge, connect):
    c = connect(edge.port)
    expect(c.cmd("EXPN staff"), 502, "5.5.1")
    expect(c.cmd("FROBNICATE"), 502, "5.5.2")
    expect(c.cmd("NOOP"), 250, "2.0.0")


def test_http_request_is_refused_and_closed(edge, connect):
    c = connect(edge.port)
    c.send("GET / HTTP/1.0\r\n")
    expect(c.reply(), 554, "5.7.0")
    assert c.closed()


def test_quit(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("QUIT"), 221, "2.0.0")
    assert c.closed()


def test_commands_are_case_insensitive(edge, connect, redis_server):
    c = connect(edge.port)
    expect(c.cmd("ehlo client.test"), 250)
    expect(c.cmd("mail from:<a@ext.test>"), 250, "2.1.0")
    expect(c.cmd("rcpt to:<u@local.test>"), 250, "2.1.5")
    expect(c.cmd("data"), 354)
    c.send("x\r\n.\r\n")
    qid = queued_id(c.reply())
    assert queued_ids(redis_server.client) == [qid]


# ---- MAIL and RCPT parameters ----------------------------------------------------------------

def test_size_parameter(edge_factory, connect):
    m = edge_factory({"edge.message_size_limit": "1k"})
    c = connect(m.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test> SIZE=1025"), 552, "5.3.4")
    expect(c.cmd("MAIL FROM:<a@ext.test> SIZE=99999999999999999999999"), 552, "5.3.4")
    expect(c.cmd("MAIL FROM:<a@ext.test> SIZE=abc"), 501, "5.5.4")
    expect(c.cmd("MAIL FROM:<a@ext.test> SIZE=1024"), 250, "2.1.0")


def test_body_8bitmime_stored_byte_for_byte(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test> BODY=8BITMIME"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<u@local.test>"), 250, "2.1.5")
    content = "Subject: caf\u00e9\r\n\r\n\u00e4\u00f6\u00fc\r\n".encode() + b"\xff\xfe\x80\r\n"
    qid = data(c, content + b".\r\n")
    env, body, _ = message(redis_server.client, qid)
    assert env["body_type"] == "8BITMIME"
    assert split_received(body)[1] == content


def test_body_bad_value(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test> BODY=9BIT"), 501, "5.5.4")
    # BINARYMIME is not offered.
    expect(c.cmd("MAIL FROM:<a@ext.test> BODY=BINARYMIME"), 555, "5.5.4")


def test_smtputf8_address_stored(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    sender, rcpt = "j\u00f6rg@ext.test", "\u00fcser@local.test"
    # Without SMTPUTF8 a UTF-8 address is refused.
    expect(c.cmd(f"MAIL FROM:<{sender}>"), 553, "5.6.7")
    expect(c.cmd(f"MAIL FROM:<{sender}> SMTPUTF8"), 250, "2.1.0")
    expect(c.cmd(f"RCPT TO:<{rcpt}>"), 250, "2.1.5")
    qid = data(c, "Subject: utf8\r\n\r\nhi\r\n.\r\n")
    env, body, rcpts = message(redis_server.client, qid)
    assert env["sender"] == sender
    assert env["smtputf8"] == "1"
    assert [r["to"] for r in rcpts] == [rcpt]
    raw = redis_server.client.hget(f"mxg:msg:{{{qid}}}", "sender")
    assert raw == sender.encode("utf-8")
    assert b" with UTF8SMTP id " + qid.encode() in body


def test_smtputf8_not_offered_to_helo_client(edge, connect):
    c = connect(edge.port)
    expect(c.cmd("HELO client.test"), 250)
    expect(c.cmd("MAIL FROM:<a@ext.test> SMTPUTF8"), 555, "5.5.4")


def test_utf8_rcpt_without_smtputf8_on_mail(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<\u00fcser@local.test>"), 553, "5.6.7")


def test_dsn_parameters_stored(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test> RET=HDRS ENVID=env+2B42"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<u@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;U+40local.test"),
           250, "2.1.5")
    expect(c.cmd("RCPT TO:<v@local.test> NOTIFY=NEVER"), 250, "2.1.5")
    expect(c.cmd("RCPT TO:<w@local.test>"), 250, "2.1.5")
    qid = data(c, "Subject: dsn\r\n\r\nhi\r\n.\r\n")
    env, _, rcpts = message(redis_server.client, qid)
    assert env["ret"] == "HDRS"
    assert env["envid"] == "env+42"
    assert rcpts[0]["to"] == "u@local.test"
    assert rcpts[0]["orcpt"] == "rfc822;U@local.test"
    assert rcpts[0]["notify"] == ["SUCCESS", "FAILURE"]
    assert rcpts[1]["notify"] == ["NEVER"] and "orcpt" not in rcpts[1]
    assert "notify" not in rcpts[2] and "orcpt" not in rcpts[2]
    assert all(r["state"] == "pending" and r["attempts"] == 0 for r in rcpts)


def test_dsn_absent_leaves_no_fields(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    qid = data(c, "x\r\n.\r\n")
    env, _, _ = message(redis_server.client, qid)
    assert "ret" not in env and "envid" not in env


def test_dsn_bad_values(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test> RET=ALL"), 501, "5.5.4")
    expect(c.cmd("MAIL FROM:<a@ext.test> ENVID=a+zz"), 501, "5.5.4")
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<u@local.test> NOTIFY=NEVER,SUCCESS"), 501, "5.5.4")
    expect(c.cmd("RCPT TO:<u@local.test> ORCPT=nosemicolon"), 501, "5.5.4")


def test_unknown_parameters(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test> FOO=bar"), 555, "5.5.4")
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<u@local.test> FOO=bar"), 555, "5.5.4")
    expect(c.cmd("RCPT TO:<u@local.test> SIZE=10"), 555, "5.5.4")


def test_duplicate_parameter(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test> SIZE=10 SIZE=20"), 501, "5.5.4")


def test_null_sender_accepted(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<u@local.test>"), 250, "2.1.5")
    qid = data(c, "Subject: bounce\r\n\r\nx\r\n.\r\n")
    env, _, _ = message(redis_server.client, qid)
    assert env["sender"] == ""


def test_bad_address_syntax(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:a@ext.test"), 501, "5.1.7")
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<u@@local.test>"), 501, "5.1.3")
    expect(c.cmd("RCPT TO:<>"), 501, "5.1.3")


# ---- BDAT (CHUNKING) -----------------------------------------------------------------------

def test_bdat_single_last_chunk(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    content = b"Subject: bdat\r\n\r\none chunk\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(content) + content)
    qid = queued_id(c.reply())
    env, body, rcpts = message(redis_server.client, qid)
    assert split_received(body)[1] == content
    assert [r["to"] for r in rcpts] == ["u@local.test"]


def test_bdat_chunks_pipelined_in_one_write(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    c.send(b"MAIL FROM:<a@ext.test>\r\nRCPT TO:<u@local.test>\r\n"
           b"BDAT 17\r\nSubject: c\r\n\r\nhelBDAT 3\r\nlo BDAT 7 LAST\r\nworld\r\n")
    r = replies(c, 5)
    expect(r[0], 250, "2.1.0")
    expect(r[1], 250, "2.1.5")
    expect(r[2], 250, "2.0.0", "17 octets")
    expect(r[3], 250, "2.0.0", "20 octets")
    qid = queued_id(r[4])
    _, body, _ = message(redis_server.client, qid)
    assert split_received(body)[1] == b"Subject: c\r\n\r\nhello world\r\n"
    expect(c.cmd("NOOP"), 250, "2.0.0")


def test_bdat_zero_last(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    c.send(b"BDAT 14\r\nSubject: z\r\n\r\n")
    expect(c.reply(), 250, "2.0.0")
    c.send(b"BDAT 0 LAST\r\n")
    qid = queued_id(c.reply())
    _, body, _ = message(redis_server.client, qid)
    assert split_received(body)[1] == b"Subject: z\r\n\r\n"


def test_bdat_zero_last_only(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    c.send(b"BDAT 0 LAST\r\n")
    qid = queued_id(c.reply())
    _, body, _ = message(redis_server.client, qid)
    assert split_received(body)[1] == b""


def test_bdat_without_mail_consumes_the_chunk(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    # The chunk holds what would be commands; they must be swallowed as the chunk's octets.
    chunk = b"NOOP\r\nRSET\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    expect(c.reply(), 503, "5.5.1")
    expect(c.cmd("NOOP"), 250, "2.0.0")
    expect(c.cmd("QUIT"), 221, "2.0.0")
    assert c.closed()
    assert c.buf == b""     # nothing answered the chunk's octets
    assert queued_ids(redis_server.client) == []


def test_bdat_without_rcpt(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    c.send(b"BDAT 4 LAST\r\nabcd")
    expect(c.reply(), 554, "5.5.1")
    expect(c.cmd("NOOP"), 250, "2.0.0")
    assert queued_ids(redis_server.client) == []


def test_bdat_bad_syntax_closes(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd("BDAT x"), 501, "5.5.4")
    assert c.closed()


def test_data_after_bdat(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    c.send(b"BDAT 3\r\nabc")
    expect(c.reply(), 250, "2.0.0")
    expect(c.cmd("DATA"), 503, "5.5.1")
    c.send(b"BDAT 4 LAST\r\ndef\n")
    qid = queued_id(c.reply())
    _, body, _ = message(redis_server.client, qid)
    assert split_received(body)[1] == b"abcdef\r\n"


def test_bdat_binary_content_byte_for_byte(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    every = bytes(b for b in range(256) if b not in (10, 13))
    content = (b"Subject: bin\r\n\r\n" + every + b"\r\n" + b".\r\n" + b"..dots\r\n"
               + b"\x00\x00\r\n" + every[::-1] + b"\r\n.\r\n")
    c.send(b"BDAT %d LAST\r\n" % len(content) + content)
    qid = queued_id(c.reply())
    _, body, _ = message(redis_server.client, qid)
    # BDAT has no dot transparency and no terminator: every octet is kept.
    assert split_received(body)[1] == content


def test_bdat_bare_newlines_normalised(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    content = b"Subject: n\n\nline1\rline2\nline3"
    c.send(b"BDAT %d LAST\r\n" % len(content) + content)
    qid = queued_id(c.reply())
    _, body, _ = message(redis_server.client, qid)
    assert split_received(body)[1] == b"Subject: n\r\n\r\nline1\r\nline2\r\nline3\r\n"


def test_data_binary_content_and_dot_transparency(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    every = bytes(b for b in range(256) if b not in (10, 13, ord(".")))
    sent = b"Subject: d\r\n\r\n" + every + b"\r\n..leading dot\r\n..\r\n\x00\r\n.\r\n"
    qid = data(c, sent)
    _, body, _ = message(redis_server.client, qid)
    assert split_received(body)[1] == (b"Subject: d\r\n\r\n" + every
                                       + b"\r\n.leading dot\r\n.\r\n\x00\r\n")


# ---- pipelining discipline (RFC 2920) ----------------------------------------------------------

def test_pipelined_transaction_for_ehlo_client(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    c.send("MAIL FROM:<a@ext.test>\r\nRCPT TO:<u@local.test>\r\nRCPT TO:<v@local.test>\r\nDATA\r\n")
    r = replies(c, 4)
    expect(r[0], 250, "2.1.0")
    expect(r[1], 250, "2.1.5")
    expect(r[2], 250, "2.1.5")
    expect(r[3], 354)
    c.send("Subject: p\r\n\r\npipelined\r\n.\r\nQUIT\r\n")
    qid = queued_id(c.reply())
    expect(c.reply(), 221, "2.0.0")
    _, body, rcpts = message(redis_server.client, qid)
    assert [x["to"] for x in rcpts] == ["u@local.test", "v@local.test"]
    assert split_received(body)[1] == b"Subject: p\r\n\r\npipelined\r\n"


def test_pipelining_after_ehlo_is_a_violation(edge, connect, redis_server):
    c = connect(edge.port)
    c.send("EHLO x\r\nMAIL FROM:<a@b>\r\n")
    expect(c.reply(), 554, "5.5.0")
    assert c.closed()
    assert c.buf == b""     # no answer to EHLO or MAIL


def test_pipelining_after_data_is_a_violation(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    c.send("DATA\r\nSubject: early\r\n\r\nx\r\n.\r\n")
    expect(c.reply(), 554, "5.5.0")
    assert c.closed()
    assert queued_ids(redis_server.client) == []


def test_helo_client_may_not_pipeline(edge, connect, redis_server):
    c = connect(edge.port)
    assert c.cmd("HELO x") == (250, ["mx.test"])
    c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@local.test>\r\n")
    expect(c.reply(), 554, "5.5.0")
    assert c.closed()
    assert c.buf == b""


# ---- the Received header ---------------------------------------------------------------------

DATE = r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000"


def test_received_header_one_recipient(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c, "client.test")
    start_tx(c, "a@ext.test", ["u@local.test"])
    qid = data(c, "Subject: r\r\n\r\nbody\r\n.\r\n")
    _, body, _ = message(redis_server.client, qid)
    received, rest = split_received(body)
    assert re.fullmatch(
        r"Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n"
        r"\tby mx\.test \(mxgate\) with ESMTP id " + qid + r"\r\n"
        r"\tfor <u@local\.test>; " + DATE + r"\r\n", received.decode()), received
    assert rest == b"Subject: r\r\n\r\nbody\r\n"


def test_received_header_several_recipients_has_no_for(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c, "client.test")
    start_tx(c, "a@ext.test", ["u@local.test", "v@local.test"])
    qid = data(c, "x\r\n.\r\n")
    _, body, _ = message(redis_server.client, qid)
    received, _ = split_received(body)
    assert re.fullmatch(
        r"Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n"
        r"\tby mx\.test \(mxgate\) with ESMTP id " + qid + "; " + DATE + r"\r\n",
        received.decode()), received
    assert b"for <" not in received


def test_received_header_esmtps(edge_factory, connect, tls_pair, redis_server):
    m = edge_factory(tls_overrides(tls_pair))
    c = connect(m.port)
    ehlo(c)
    c.starttls()
    ehlo(c, "tls.client.test")
    start_tx(c)
    qid = data(c, "x\r\n.\r\n")
    env, body, _ = message(redis_server.client, qid)
    received, _ = split_received(body)
    assert re.fullmatch(
        r"Received: from tls\.client\.test \(\[127\.0\.0\.1\]\)\r\n"
        r"\tby mx\.test \(mxgate\) with ESMTPS id " + qid + r"\r\n"
        r"\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+ \(\d+/\d+ bits\)\)\r\n"
        r"\tfor <u@local\.test>; " + DATE + r"\r\n", received.decode()), received
    assert "auth_user" not in env


def test_hostile_helo_is_sanitised(edge, connect, redis_server):
    c = connect(edge.port)
    c.send(b"EHLO a(b)\x01;c\r\n")
    expect(c.reply(), 250)
    start_tx(c)
    qid = data(c, "x\r\n.\r\n")
    env, body, _ = message(redis_server.client, qid)
    received, _ = split_received(body)
    first = received.split(b"\r\n")[0]
    assert first == rb"Received: from a\x28b\x29\x01\x3bc ([127.0.0.1])"
    helo_part = first[len(b"Received: from "):first.index(b" ([")]
    assert b"(" not in helo_part and b")" not in helo_part and b";" not in helo_part
    assert not any(ch < 0x20 and ch not in (9, 10, 13) for ch in received)
    assert env["client_helo"] == r"a\x28b\x29\x01\x3bc"


def test_helo_with_crlf_tricks_cannot_inject_header(edge, connect, redis_server):
    c = connect(edge.port)
    # A CR inside the command line is refused outright; nothing reaches a header.
    c.send(b"EHLO evil\rX-Injected: yes\r\n")
    expect(c.reply(), 500, "5.5.2")
    ehlo(c, "clean.test")
    start_tx(c)
    qid = data(c, "x\r\n.\r\n")
    _, body, _ = message(redis_server.client, qid)
    assert b"X-Injected" not in body
