"""Test credentials for the auth listeners of `scripts/services`: a CA, server/client/expired certificates, an
untrusted CA, a PKCS#12 keystore for Kafka, a NATS password and an nkey user. Run by scripts/services, not by users.

    python scripts/auth_material.py DIR      creates what is missing in DIR (idempotent; `reset` deletes DIR)

Everything is for loopback test servers only: keys are unencrypted files in DIR (mode 0600), never reused elsewhere.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import secrets
import struct
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey
DAY = dt.timedelta(days=1)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600 if private else 0o644)
    tmp.replace(path)


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "eventbus tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> tuple[x509.Certificate, Key]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - DAY).not_valid_after(now + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(ca: x509.Certificate, ca_key: Key, cn: str, *, server: bool,
              not_before: dt.datetime, not_after: dt.datetime) -> tuple[x509.Certificate, Key]:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


# --- nkeys (the NATS encoding: base32 of prefix byte(s) + raw key + CRC-16/XMODEM, little endian) --------------
_PREFIX_SEED = 18 << 3
_PREFIX_USER = 20 << 3


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32(raw: bytes) -> bytes:
    payload = raw + struct.pack("<H", _crc16(raw))
    return base64.b32encode(payload).rstrip(b"=")


def make_user_nkey() -> tuple[bytes, bytes]:
    """(seed `SU...`, public key `U...`) of a fresh NATS user nkey."""
    key = ed25519.Ed25519PrivateKey.generate()
    raw_seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    raw_pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    seed = _b32(bytes([_PREFIX_SEED | (_PREFIX_USER >> 5), (_PREFIX_USER & 31) << 3]) + raw_seed)
    return seed, _b32(bytes([_PREFIX_USER]) + raw_pub)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    if (out / "complete").is_file():
        return
    now = dt.datetime.now(dt.UTC)
    ca, ca_key = make_ca("eventbus test CA")
    server, server_key = make_leaf(ca, ca_key, "127.0.0.1", server=True, not_before=now - DAY,
                                   not_after=now + 825 * DAY)
    client, client_key = make_leaf(ca, ca_key, "eventbus-client", server=False, not_before=now - DAY,
                                   not_after=now + 825 * DAY)
    expired, expired_key = make_leaf(ca, ca_key, "127.0.0.1", server=True, not_before=now - 30 * DAY,
                                     not_after=now - DAY)
    untrusted, _ = make_ca("eventbus untrusted CA")
    store_password = secrets.token_urlsafe(18)
    # Few KDF rounds: the JVM decrypts this keystore once per TLS listener at startup, still interpreted (a test
    # keystore on loopback; the default 20,000+ rounds cost Kafka's start a noticeable part of a second).
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(1000)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
                  .build(store_password.encode()))

    _write(out / "ca.pem", _cert_pem(ca))
    _write(out / "untrusted-ca.pem", _cert_pem(untrusted))
    for name, cert, key in (("server", server, server_key), ("client", client, client_key),
                            ("expired", expired, expired_key)):
        _write(out / f"{name}.pem", _cert_pem(cert))
        _write(out / f"{name}.key", _key_pem(key), private=True)
        if name != "client":  # Kafka reads its server keys from PKCS#12 (its PEM files need an encrypted key)
            p12 = pkcs12.serialize_key_and_certificates(b"kafka", key, cert, [ca], encryption)
            _write(out / f"{name}.p12", p12, private=True)
    _write(out / "keystore.password", store_password.encode(), private=True)
    _write(out / "nats.password", secrets.token_urlsafe(18).encode(), private=True)
    seed, public = make_user_nkey()
    _write(out / "nkey-user.nk", seed + b"\n", private=True)
    _write(out / "nkey-user.pub", public + b"\n")
    _write(out / "complete", b"")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: auth_material.py DIR")
    main(Path(sys.argv[1]))
