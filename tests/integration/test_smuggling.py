"""SMTP smuggling: no look-alike of the end-of-data sequence inside DATA or
BDAT content ever starts a second transaction.

Each sequence of the issue's list is put between "hello" and a smuggled transaction (MAIL, RCPT,
DATA, a message), followed by the real CRLF.CRLF. The content is sent as one TCP write, byte by
byte, and split in two at each boundary of the sequence. Under bare_newline=normalize the result
is exactly one message, to the one real recipient, whose content is what a reader of RFC 5321 with
Postfix's normalize rule expects (computed by the small model below, independently of the C
decoder); under bare_newline=reject every sequence with a bare CR or LF gets 550 5.5.2 and
nothing is queued. The same payload inside BDAT chunks gives the same results.

One Redis and two edges (one per policy) serve the whole module; Redis is emptied before each test.
"""
import pytest

from mxtest import (SMTP, Mxgate, Redis, ehlo, expect, message, nodelay, queued_id, queued_ids,
                    replies, replies_until_close, send_split, split_received)

SEQUENCES = [
    b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r",
    b"\r\n\x00.\r\n", b"\r\n.\r\r\n", b"\r\r\n.\r\r\n",
]

BEFORE = b"Subject: x\r\n\r\nhello"
SMUGGLED = (b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@local.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil")
END = b"\r\n.\r\n"
SENDER, RCPT = "s@ext.test", "u@local.test"


def seq_id(seq):
    return seq.decode("latin-1").encode("unicode_escape").decode().replace("\\", "")


# ---- the reference model -------------------------------------------------------------------

def split_lines(raw):
    """(line, end) pairs: end is "crlf" for CR LF, "bare" for a lone CR or LF, None when the
    content stops inside the line."""
    out, start, i, n = [], 0, 0, len(raw)
    while i < n:
        if raw[i] == 13 and i + 1 < n and raw[i + 1] == 10:
            out.append((raw[start:i], "crlf"))
            i += 2
            start = i
        elif raw[i] in (10, 13):
            out.append((raw[start:i], "bare"))
            i += 1
            start = i
        else:
            i += 1
    if start < n:
        out.append((raw[start:], None))
    return out


def model_data(raw):
    """DATA content as stored, and how many bare CR/LF it had: lines end in CR LF, a leading dot
    is dropped, and only "." between two real CR LFs (or at the start) ends the content."""
    out, bare, prev_real = b"", 0, True
    for line, end in split_lines(raw):
        if line == b"." and end == "crlf" and prev_real:
            return out, bare
        bare += end == "bare"
        if line.startswith(b"."):
            line = line[1:]
        out += line + b"\r\n"
        prev_real = end == "crlf"
    raise AssertionError("model: no terminator in %r" % raw)


def model_bdat(raw):
    """BDAT content as stored: lines end in CR LF (a last unterminated one too); no dot rule."""
    out, bare = b"", 0
    for line, end in split_lines(raw):
        bare += end == "bare"
        out += line + b"\r\n"
    return out, bare


def test_model_sanity():
    assert model_data(b"a\r\n..b\r\n.\r\n") == (b"a\r\n.b\r\n", 0)
    assert model_data(b"a\n.\nb\r\n.\r\n") == (b"a\r\n\r\nb\r\n", 2)
    assert model_bdat(b"a\r\n.\r\nb") == (b"a\r\n.\r\nb\r\n", 0)
    assert model_bdat(b"a\rb\n") == (b"a\r\nb\r\n", 2)


# ---- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rds(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("smuggling-redis"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def edges(tmp_path_factory, rds):
    base = tmp_path_factory.mktemp("smuggling-edges")
    started = {}
    try:
        for policy in ("normalize", "reject"):
            started[policy] = Mxgate(base / policy, rds.url, {"edge.bare_newline": policy})
        yield started
    finally:
        for m in started.values():
            m.stop()


@pytest.fixture
def r(rds):
    rds.client.flushall()
    return rds.client


def open_data(port):
    """A session in DATA (after 354), commands pipelined as RFC 2920 allows."""
    c = nodelay(SMTP(port))
    ehlo(c)
    c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n")
    rs = replies(c, 3)
    expect(rs[0], 250, "2.1.0")
    expect(rs[1], 250, "2.1.5")
    expect(rs[2], 354)
    return c


def writes(seq, how):
    """The content after DATA's 354 (payload, real terminator, QUIT) as a list of TCP writes."""
    whole = BEFORE + seq + SMUGGLED + END + b"QUIT\r\n"
    if how == "one-write":
        return [whole]
    if how == "bytewise":
        return [bytes([b]) for b in whole]
    k = int(how.split("-")[1])
    cut = len(BEFORE) + k
    return [whole[:cut], whole[cut:]]


def check_one_message(r, rs, expected_content):
    assert len(rs) == 2, rs
    qid = queued_id(rs[0])
    expect(rs[1], 221, "2.0.0")
    assert queued_ids(r) == [qid]
    assert r.zcard("mxg:due") == 1
    env, body, rcpts = message(r, qid)
    assert env["sender"] == SENDER
    assert [x["to"] for x in rcpts] == [RCPT]
    content = split_received(body)[1]
    assert content == expected_content
    # The smuggled transaction is in there, as text.
    assert b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@local.test>\r\nDATA\r\n" in content
    assert content.endswith(b"Subject: smuggled\r\n\r\nevil\r\n")


def check_refused(r, rs):
    assert len(rs) == 2, rs
    expect(rs[0], 550, "5.5.2")
    expect(rs[1], 221, "2.0.0")
    assert queued_ids(r) == []
    assert r.zcard("mxg:due") == 0


def split_modes(seq):
    return ["one-write", "bytewise"] + [f"at-{k}" for k in range(len(seq) + 1)]


CASES = [pytest.param(seq, how, id=f"{seq_id(seq)}-{how}")
         for seq in SEQUENCES for how in split_modes(seq)]


# ---- DATA ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seq,how", CASES)
def test_data_normalize_yields_one_message(edges, r, seq, how):
    expected, _ = model_data(BEFORE + seq + SMUGGLED + END)
    c = open_data(edges["normalize"].port)
    try:
        send_split(c, writes(seq, how), pause=0.002 if how == "bytewise" else 0.03)
        rs = replies_until_close(c)
    finally:
        c.close()
    check_one_message(r, rs, expected)


@pytest.mark.parametrize("seq,how", CASES)
def test_data_reject_policy(edges, r, seq, how):
    expected, bare = model_data(BEFORE + seq + SMUGGLED + END)
    c = open_data(edges["reject"].port)
    try:
        send_split(c, writes(seq, how), pause=0.002 if how == "bytewise" else 0.03)
        rs = replies_until_close(c)
    finally:
        c.close()
    if bare:
        check_refused(r, rs)
    else:
        # Only the NUL sequence has no bare CR or LF: it is plain content.
        assert seq == b"\r\n\x00.\r\n"
        check_one_message(r, rs, expected)


def test_only_the_nul_sequence_is_free_of_bare_newlines():
    clean = [s for s in SEQUENCES if model_data(BEFORE + s + SMUGGLED + END)[1] == 0]
    assert clean == [b"\r\n\x00.\r\n"]


# ---- BDAT ----------------------------------------------------------------------------------

def open_bdat(port):
    c = nodelay(SMTP(port))
    ehlo(c)
    c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\n")
    rs = replies(c, 2)
    expect(rs[0], 250, "2.1.0")
    expect(rs[1], 250, "2.1.5")
    return c


def bdat_chunks(seq, how):
    """The payload (with what would be a terminator in DATA) as BDAT commands: one chunk, or two
    chunks cut at a boundary of the sequence, each sent as its own write."""
    content = BEFORE + seq + SMUGGLED + END
    if how == "one-chunk":
        return content, [b"BDAT %d LAST\r\n" % len(content) + content + b"QUIT\r\n"]
    k = int(how.split("-")[1])
    cut = len(BEFORE) + k
    a, b = content[:cut], content[cut:]
    return content, [b"BDAT %d\r\n" % len(a) + a, b"BDAT %d LAST\r\n" % len(b) + b + b"QUIT\r\n"]


BDAT_CASES = [pytest.param(seq, how, id=f"{seq_id(seq)}-{how}")
              for seq in SEQUENCES
              for how in ["one-chunk"] + [f"at-{k}" for k in range(len(seq) + 1)]]


def run_bdat(port, seq, how):
    content, parts = bdat_chunks(seq, how)
    c = open_bdat(port)
    try:
        send_split(c, parts, pause=0.03)
        rs = replies_until_close(c)
    finally:
        c.close()
    if len(parts) == 2:
        expect(rs[0], 250, "2.0.0")     # the first chunk
        rs = rs[1:]
    return content, rs


@pytest.mark.parametrize("seq,how", BDAT_CASES)
def test_bdat_normalize_yields_one_message(edges, r, seq, how):
    content, rs = run_bdat(edges["normalize"].port, seq, how)
    expected, _ = model_bdat(content)
    assert len(rs) == 2, rs
    qid = queued_id(rs[0])
    expect(rs[1], 221, "2.0.0")
    assert queued_ids(r) == [qid]
    env, body, rcpts = message(r, qid)
    assert env["sender"] == SENDER
    assert [x["to"] for x in rcpts] == [RCPT]
    stored = split_received(body)[1]
    assert stored == expected
    assert b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@local.test>\r\nDATA\r\n" in stored


@pytest.mark.parametrize("seq,how", BDAT_CASES)
def test_bdat_reject_policy(edges, r, seq, how):
    content, rs = run_bdat(edges["reject"].port, seq, how)
    expected, bare = model_bdat(content)
    if bare:
        check_refused(r, rs)
    else:
        assert seq == b"\r\n\x00.\r\n"
        assert len(rs) == 2, rs
        qid = queued_id(rs[0])
        assert queued_ids(r) == [qid]
        assert split_received(message(r, qid)[1])[1] == expected


# ---- the real terminator still works after look-alikes --------------------------------------

def test_several_messages_after_lookalikes_in_one_session(edges, r):
    """Every look-alike in one message, then a second message in the same session: two messages,
    each with its own single recipient."""
    c = open_data(edges["normalize"].port)
    try:
        payload = BEFORE + b"".join(s + b"x" for s in SEQUENCES) + END
        c.send(payload)
        first = queued_id(c.reply())
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<second@local.test>\r\nDATA\r\n")
        rs = replies(c, 3)
        expect(rs[2], 354)
        c.send(b"Subject: second\r\n\r\nok\r\n.\r\nQUIT\r\n")
        rs = replies_until_close(c)
    finally:
        c.close()
    second = queued_id(rs[0])
    expect(rs[1], 221, "2.0.0")
    assert queued_ids(r) == sorted([first, second])
    _, body, rcpts = message(r, first)
    assert [x["to"] for x in rcpts] == [RCPT]
    assert split_received(body)[1] == model_data(payload)[0]
    assert [x["to"] for x in message(r, second)[2]] == ["second@local.test"]
