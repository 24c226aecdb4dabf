"""Certificates and keys of the local cluster, generated once per state directory."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NODE_NAME = "kitaru-local"
SERVICE_IP = "10.96.0.1"
APISERVER_SANS = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]
_VALIDITY = datetime.timedelta(days=3650)

# file name -> (common name, organisation)
CLIENT_CERTS: dict[str, tuple[str, str | None]] = {
    "admin": ("kitaru-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", None),
    "node": (f"system:node:{NODE_NAME}", "system:nodes"),
}


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write_pair(
    pki: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    _write_key(pki / f"{name}.key", key)
    (pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, *, ca: bool
) -> x509.CertificateBuilder:
    """A ten-year certificate (valid from five minutes ago, for clock skew) whose key
    signs: certificates and CRLs for the CA, digital signatures only otherwise."""
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _issue(
    pki: Path,
    name: str,
    subject: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server_sans: list[str] | None = None,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_sans else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _builder(subject, ca_cert.subject, key, ca=False).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if server_sans:
        alt: list[x509.GeneralName] = []
        for san in server_sans:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                alt.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    _write_pair(pki, name, key, builder.sign(ca_key, hashes.SHA256()))


def ensure_pki(pki: Path) -> None:
    """Create the CA, serving and client certificates and the service-account key pair.

    Existing files are kept, so kubeconfigs handed out earlier stay valid across restarts.
    """
    marker = pki / "complete"
    if marker.exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kitaru-local-ca")
    ca_cert = _builder(ca_name, ca_name, ca_key, ca=True).sign(ca_key, hashes.SHA256())
    _write_pair(pki, "ca", ca_key, ca_cert)

    _issue(
        pki,
        "apiserver",
        _name("kube-apiserver"),
        ca_key,
        ca_cert,
        server_sans=["127.0.0.1", SERVICE_IP, *APISERVER_SANS],
    )
    # The node agent's HTTPS endpoint (kubectl logs): the API server dials the node's InternalIP.
    _issue(
        pki,
        "node-serving",
        _name(f"system:node:{NODE_NAME}", "system:nodes"),
        ca_key,
        ca_cert,
        server_sans=["127.0.0.1", "localhost", NODE_NAME],
    )
    for name, (cn, org) in CLIENT_CERTS.items():
        _issue(pki, name, _name(cn, org), ca_key, ca_cert)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    marker.write_text("ok\n")
