"""A private OpenLDAP slapd in a temp dir on a free loopback port: the directory the LDAP
recipient verification source asks. Users are inetOrgPerson entries under ou=people with uid and
mail; an address add_user() was not given is unknown to it.

How slapd runs here (Debian 12, OpenLDAP 2.5): a plain slapd.conf given with -f, back_mdb loaded
from /usr/lib/ldap. slapd runs as the user who starts it: as root no -u/-g is given (-u openldap
would need the directory chowned to openldap), and unprivileged it works the same on a port above
1023. -d 0 keeps it in the foreground with no debug output, so the Popen pid is slapd's own and
stop() ends it by that pid. Entries are loaded with slapadd while slapd is stopped and with
ldapadd (as the rootdn) while it runs.
"""
import base64
import os
import subprocess

import mxtest

SCHEMAS = ("core", "cosine", "inetorgperson")


def _ldif_value(attr, value):
    """One LDIF line; base64 (RFC 2849 "::") whatever the value holds."""
    return f"{attr}:: {base64.b64encode(value.encode()).decode()}\n"


class Slapd:
    base = "dc=example,dc=test"
    bind_dn = "cn=admin,dc=example,dc=test"
    bind_pw = "secret-admin"

    def __init__(self, dir, users=("bob@example.test", "carol@example.test"), start=True):
        self.dir = str(dir)
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)
        self.port = mxtest.free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}/"
        self.proc = None
        self.count = 0
        self.conf = os.path.join(self.dir, "slapd.conf")
        includes = "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS)
        with open(self.conf, "w") as f:
            f.write(f"""{includes}modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.dir}/slapd.pid
argsfile {self.dir}/slapd.args
database mdb
maxsize 16777216
suffix "{self.base}"
rootdn "{self.bind_dn}"
rootpw {self.bind_pw}
directory {self.dir}/db
index mail,uid eq
access to * by * read
""")
        ldif = (f"dn: {self.base}\nobjectClass: dcObject\nobjectClass: organization\n"
                f"dc: example\no: example\n\n"
                f"dn: ou=people,{self.base}\nobjectClass: organizationalUnit\nou: people\n\n")
        ldif += "".join(self._user_ldif(m) for m in users)
        self._slapadd(ldif)
        if start:
            self.start()

    def _user_ldif(self, mail):
        """An entry for mail: uid is its local part, the RDN a counter (any local part fits)."""
        self.count += 1
        local = mail.rsplit("@", 1)[0]
        dn = f"cn=user{self.count},ou=people,{self.base}"
        return (f"dn: {dn}\nobjectClass: inetOrgPerson\ncn: user{self.count}\nsn: user\n"
                + _ldif_value("uid", local) + _ldif_value("mail", mail) + "\n")

    def _slapadd(self, ldif):
        subprocess.run(["slapadd", "-q", "-f", self.conf], input=ldif.encode(), check=True,
                       capture_output=True)

    def _answers(self):
        r = subprocess.run(["ldapsearch", "-x", "-H", self.uri, "-b", self.base, "-s", "base",
                            "-o", "nettimeout=1", "1.1"], capture_output=True)
        return r.returncode == 0

    def start(self):
        """Runs slapd in the foreground (same port every time); returns once it answers."""
        log = open(os.path.join(self.dir, "slapd.log"), "ab")
        try:
            self.proc = subprocess.Popen(["slapd", "-d", "0", "-f", self.conf, "-h", self.uri],
                                         stdout=log, stderr=log)
        finally:
            log.close()
        mxtest.wait_for(lambda: self.proc.poll() is not None or self._answers(), what="slapd")
        if self.proc.poll() is not None:
            raise AssertionError(f"slapd exited with {self.proc.returncode} (see {self.dir}/slapd.log)")

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def add_user(self, mail):
        """Adds an entry with this mail (uid = its local part): ldapadd when running, else slapadd."""
        ldif = self._user_ldif(mail)
        if self.proc is None:
            self._slapadd(ldif)
            return
        subprocess.run(["ldapadd", "-x", "-H", self.uri, "-D", self.bind_dn, "-w", self.bind_pw],
                       input=ldif.encode(), check=True, capture_output=True)
