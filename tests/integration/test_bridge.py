"""The mailbox bridge's embedded default: local mail into Maildirs under state_dir/mailboxes."""
import glob
import os
import subprocess

import mxtest
from mxtest import queued_ids, send_message, split_received


def maildir_files(state_dir, user, sub="new"):
    return sorted(glob.glob(os.path.join(state_dir, "mailboxes", user, "Maildir", sub, "*")))


def test_local_recipients_land_in_their_maildirs(tmp_path, redis_server, edge_factory):
    edge = edge_factory()
    state = edge.overrides["state_dir"]
    o = {"state_dir": state, "relay.poll": "100ms"}
    relay = mxtest.Mxgate(tmp_path / "relay", redis_server.url, o, command="relay", wait_ports=False)
    bridge = mxtest.Mxgate(tmp_path / "bridge", redis_server.url, o, command="bridge", wait_ports=False)
    try:
        content = b"Subject: home\r\nFrom: <a@src.test>\r\n\r\nline one\r\n..dotted\r\nlast\r\n"
        code, lines = send_message(edge.port, "a@src.test",
                                   ["bob@local.test", "carol@example.test", "Alice.Smith@local.test"],
                                   content + b".\r\n")
        assert code == 250
        qid = lines[0].split()[-1]
        for user in ("bob", "carol", "alice.smith"):
            mxtest.wait_for(lambda: maildir_files(state, user), what=f"{user}'s Maildir")
        mxtest.wait_for(lambda: queued_ids(redis_server.client) == [], what="message removed")
        for user, rcpt in (("bob", "bob@local.test"), ("carol", "carol@example.test"),
                           ("alice.smith", "Alice.Smith@local.test")):
            files = maildir_files(state, user)
            assert len(files) == 1
            assert maildir_files(state, user, "tmp") == []
            data = open(files[0], "rb").read()
            head = f"Return-Path: <a@src.test>\nDelivered-To: {rcpt}\n".encode()
            assert data.startswith(head)
            received, rest = split_received(data[len(head):].replace(b"\n", b"\r\n"))
            assert f"id {qid}".encode() in received
            assert rest == b"Subject: home\r\nFrom: <a@src.test>\r\n\r\nline one\r\n.dotted\r\nlast\r\n"
            assert b"\r" not in data
            assert oct(os.stat(files[0]).st_mode & 0o777) == "0o600"
        assert len(bridge.events("delivered")) == 3
        assert len(relay.events("routed")) == 3
    finally:
        relay.stop()
        bridge.stop()


def test_run_on_defaults_delivers_1000_messages_to_maildirs(tmp_path):
    m = mxtest.Mxgate(tmp_path / "run", None, command="run")
    try:
        n = 1000
        r = subprocess.run(["smtp-source", "-s", "20", "-m", str(n), "-l", "2048", "-f", "a@src.test",
                            "-t", "bob@example.test", f"127.0.0.1:{m.port}"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        state = m.overrides["state_dir"]
        mxtest.wait_for(lambda: len(maildir_files(state, "bob")) >= n, timeout=120,
                        what="every message in the Maildir")
        files = maildir_files(state, "bob")
        assert len(files) == n                           # 0 lost, none twice
        ids = set()
        for f in files:
            for line in open(f, "rb"):
                if line.lower().startswith(b"message-id:"):
                    ids.add(line.strip())
                    break
        assert len(ids) == n
    finally:
        assert m.stop() == 0
