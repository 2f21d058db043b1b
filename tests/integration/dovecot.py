"""A private Dovecot (LMTP in, IMAP out) in a temp dir on free loopback ports: the stand-in
mailbox tier. Users come from a passwd-file, so an unknown address is refused at RCPT. A user may
get a storage quota (quota={"carol": "1K"}); a delivery over it is deferred (quota_full_tempfail),
the way a full mailbox is on a real tier."""
import os
import subprocess

import mxtest


class Dovecot:
    def __init__(self, dir, users=("bob", "carol"), quota=None):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.mail = os.path.join(self.dir, "mail")
        for d in ("mail", "base", "state"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        subprocess.run(["chown", "-R", "mail:mail", self.mail], check=True)
        subprocess.run(["chmod", "755", self.dir], check=True)
        # Dovecot's unprivileged processes must reach the config and the users file.
        parent = os.path.dirname(self.dir)
        while parent not in ("/", "/tmp"):
            os.chmod(parent, os.stat(parent).st_mode | 0o111)
            parent = os.path.dirname(parent)
        self.users = os.path.join(self.dir, "users")
        with open(self.users, "w") as f:
            for u in users:
                extra = f"::userdb_quota_rule=*:storage={quota[u]}" if quota and u in quota else ""
                f.write(f"{u}:{{PLAIN}}secret::::{self.mail}/{u}{extra}\n")
        os.chmod(self.users, 0o644)
        self.lmtp_port = mxtest.free_port()
        self.imap_port = mxtest.free_port()
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(f"""base_dir = {self.dir}/base
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 8
mail_uid = mail
mail_gid = mail
mail_location = maildir:{self.mail}/%n
protocols = imap lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
listen = 127.0.0.1
lmtp_rcpt_check_quota = no
auth_username_format = %n
mail_plugins = $mail_plugins quota
quota_full_tempfail = yes
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = {self.users}
}}
userdb {{
  driver = passwd-file
  args = {self.users}
  default_fields = uid=mail gid=mail
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
""")
        self.start()

    def start(self):
        subprocess.run(["dovecot", "-c", self.conf], check=True)
        mxtest.wait_for(lambda: mxtest.port_open(self.lmtp_port), what="dovecot lmtp")

    def stop(self):
        subprocess.run(["dovecot", "-c", self.conf, "stop"], capture_output=True)
        mxtest.wait_for(lambda: not mxtest.port_open(self.lmtp_port), what="dovecot stopped")

    def inbox(self, user):
        """Every message in user's INBOX, read back over IMAP."""
        import imaplib
        m = imaplib.IMAP4("127.0.0.1", self.imap_port)
        try:
            m.login(user, "secret")
            m.select("INBOX")
            _, data = m.search(None, "ALL")
            out = []
            for num in data[0].split():
                _, msg = m.fetch(num, "(RFC822)")
                out.append(msg[0][1])
            return out
        finally:
            m.logout()
