"""local.recipients: changes apply without a restart; a broken table defers (450), never bounces."""
import os
import time

import mxtest
from mxtest import SMTP


def rcpt(port, addr):
    c = SMTP(port)
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<a@src.test>")[0] == 250
        code, lines = c.cmd(f"RCPT TO:<{addr}>")
        return code, lines[0]
    finally:
        c.close()


def rewrite(path, text):
    """Replaces the file's content with a new inode, as an editor's save or a deploy does."""
    tmp = str(path) + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def test_edit_takes_effect_without_restart(tmp_path, edge_factory):
    table = tmp_path / "recipients"
    table.write_text("alice@local.test\n")
    edge = edge_factory({"local.recipients": str(table)})
    assert rcpt(edge.port, "alice@local.test")[0] == 250
    assert rcpt(edge.port, "bob@local.test") == (550, "5.1.1 <bob@local.test>: Recipient address rejected: User unknown")
    rewrite(table, "alice@local.test\nbob@local.test\n")
    mxtest.wait_for(lambda: rcpt(edge.port, "bob@local.test")[0] == 250, timeout=5,
                    what="bob accepted after the edit")
    assert edge.events("recipients-loaded")


def test_missing_table_defers_and_recovers(tmp_path, edge_factory):
    table = tmp_path / "recipients"
    table.write_text("alice@local.test\n")
    edge = edge_factory({"local.recipients": str(table)})
    os.unlink(table)
    mxtest.wait_for(lambda: rcpt(edge.port, "alice@local.test")[0] == 450, timeout=5,
                    what="450 while the table is gone")
    code, text = rcpt(edge.port, "carol@local.test")
    assert (code, text) == (450, "4.3.0 <carol@local.test>: Recipient address lookup failed, try again later")
    assert edge.events("recipients-unreadable")
    rewrite(table, "alice@local.test\n")
    mxtest.wait_for(lambda: rcpt(edge.port, "alice@local.test")[0] == 250, timeout=5,
                    what="accepted again once the table is back")
    assert rcpt(edge.port, "carol@local.test")[0] == 550


def test_malformed_table_defers(tmp_path, edge_factory):
    table = tmp_path / "recipients"
    table.write_text("alice@local.test\n")
    edge = edge_factory({"local.recipients": str(table)})
    rewrite(table, "alice@local.test\nthis is not an address\n")
    mxtest.wait_for(lambda: rcpt(edge.port, "alice@local.test")[0] == 450, timeout=5,
                    what="450 while the table is malformed")
    rec = edge.events("recipients-invalid")[0]
    assert f"{table}:2: 'this is not an address' is not an address or @domain" in rec["msg"]


def test_relay_check_comes_before_lookup(tmp_path, edge_factory):
    """A missing table never turns a relay attempt into a 450."""
    table = tmp_path / "recipients"
    table.write_text("alice@local.test\n")
    edge = edge_factory({"local.recipients": str(table)})
    os.unlink(table)
    time.sleep(1.1)
    assert rcpt(edge.port, "u@ext.test")[0] == 554
