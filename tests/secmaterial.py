#!/usr/bin/env python3
"""secmaterial.py - test material for tests/it_security.c, made at test time
(nothing secret is kept in the tree). Python 3 standard library plus the
openssl command-line tool (ed25519 keys and signatures, X.509 certificates).

Usage: secmaterial.py DIR

Writes into DIR:
  ca.pem, ca.key               a test CA
  server.pem, server.key       server certificate for 127.0.0.1 / localhost
  client.pem, client.key       client certificate signed by the CA
  other-ca.pem                 a CA that signed nothing here
  watcher.nk, watcher.pub      a user NKey: seed file (SU...) and public key (U...)
  stranger.nk                  a user NKey the server does not know
  operator.jwt, account.pub, account.jwt   operator mode (JWT) for creds
  user.creds                   user JWT + seed of that account (pub presence.events.n1,
                               sub presence.resync.n1, presence.user.>, _INBOX.>)
  bad.creds                    a user signed by a key that is not the account's

NKeys: base32 (RFC 4648, no padding) of prefix byte(s), 32 key bytes and a
CRC-16/XMODEM in little-endian; a seed has two prefix bytes (S + type).
"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import time

PREFIX = {"operator": 14 << 3, "account": 0, "user": 20 << 3}
PREFIX_SEED = 18 << 3


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def b32(raw):
    return base64.b32encode(raw).decode().rstrip("=")


def encode(raw):
    return b32(raw + crc16(raw).to_bytes(2, "little"))


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, check=True,
                          capture_output=True).stdout


class NKey:
    """An ed25519 key made by openssl, with its NKey encodings."""

    def __init__(self, kind, path):
        self.kind = kind
        self.pem = path
        openssl("genpkey", "-algorithm", "ed25519", "-out", path)
        der = openssl("pkey", "-in", path, "-outform", "DER")
        pub = openssl("pkey", "-in", path, "-pubout", "-outform", "DER")
        self.raw_seed, self.raw_pub = der[-32:], pub[-32:]
        t = PREFIX[kind]
        self.public = encode(bytes([t]) + self.raw_pub)
        self.seed = encode(bytes([PREFIX_SEED | (t >> 5), (t & 31) << 3]) + self.raw_seed)

    def sign(self, data):
        tmp = self.pem + ".msg"
        with open(tmp, "wb") as f:
            f.write(data)
        sig = openssl("pkeyutl", "-sign", "-inkey", self.pem, "-rawin", "-in", tmp)
        os.unlink(tmp)
        return sig


def b64url(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def jwt(issuer, subject_pub, name, nats):
    claims = {"iat": int(time.time()), "iss": issuer.public, "name": name,
              "sub": subject_pub, "nats": dict(nats, version=2)}
    claims["jti"] = b32(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest())
    header = b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = issuer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{b64url(sig)}"


def creds(user_jwt, seed):
    return (f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


def write(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def certificates(d):
    def p(name):
        return os.path.join(d, name)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN=presence test {ca}",
                "-keyout", p(ca + ".key"), "-out", p(ca + ".pem"))
    ext = p("san.ext")
    write(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
               "extendedKeyUsage=serverAuth,clientAuth\n")
    for who in ("server", "client"):
        openssl("req", *ec, "-subj", f"/CN={who}", "-keyout", p(who + ".key"),
                "-out", p(who + ".csr"))
        openssl("x509", "-req", "-in", p(who + ".csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", p(who + ".pem"))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)

    def p(name):
        return os.path.join(d, name)
    certificates(d)
    watcher = NKey("user", p("watcher.key"))
    write(p("watcher.nk"), watcher.seed + "\n")
    write(p("watcher.pub"), watcher.public + "\n")
    stranger = NKey("user", p("stranger.key"))
    write(p("stranger.nk"), stranger.seed + "\n")

    op = NKey("operator", p("operator.key"))
    acc = NKey("account", p("account.key"))
    usr = NKey("user", p("user.key"))
    rogue = NKey("account", p("rogue.key"))
    write(p("operator.jwt"), jwt(op, op.public, "presence-test", {"type": "operator"}))
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                 "wildcards": True, "conn": -1, "leaf": -1}
    write(p("account.pub"), acc.public)
    write(p("account.jwt"), jwt(op, acc.public, "PRESENCE",
                                {"type": "account", "limits": unlimited,
                                 "default_permissions": {"pub": {}, "sub": {}}}))
    perms = {"type": "user", "subs": -1, "data": -1, "payload": -1,
             "pub": {"allow": ["presence.events.n1"]},
             "sub": {"allow": ["presence.resync.n1", "presence.user.>", "_INBOX.>"]}}
    write(p("user.creds"), creds(jwt(acc, usr.public, "sockets-n1", perms), usr.seed))
    write(p("bad.creds"), creds(jwt(rogue, usr.public, "sockets-n1", perms), usr.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
