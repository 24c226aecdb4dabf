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
# The gateway of the node's pod bridge: the API server and the kubelet listen there,
# because pods cannot reach the host's loopback.
NODE_IP = "10.244.0.1"
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
    # Bound by the built-in ClusterRoleBinding system:node-proxier.
    "kube-proxy": ("system:kube-proxy", None),
    # Bound to the read-only role the cluster creates for CoreDNS.
    "coredns": ("system:coredns", None),
}

# file name -> (common name, organisation, subject alternative names) of serving certificates
SERVING_CERTS: dict[str, tuple[str, str | None, list[str]]] = {
    "apiserver": ("kube-apiserver", None, ["127.0.0.1", NODE_IP, SERVICE_IP, *APISERVER_SANS]),
    # The kubelet's HTTPS endpoint (logs, exec, port-forward): the API server dials the
    # node's InternalIP.
    "kubelet-serving": (
        f"system:node:{NODE_NAME}",
        "system:nodes",
        ["127.0.0.1", NODE_IP, "localhost", NODE_NAME],
    ),
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


def _sans(cert_file: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in alt.get_values_for_type(x509.IPAddress)} | set(
        alt.get_values_for_type(x509.DNSName)
    )


def _load_ca(pki: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())


def ensure_pki(pki: Path) -> None:
    """Create the CA, serving and client certificates and the service-account key pair.

    Existing files are kept, so kubeconfigs handed out earlier stay valid across
    restarts; what is missing is issued by the existing CA, and a serving certificate
    whose names differ from the wanted ones is issued again.
    """
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("kitaru-local-ca")
        _write_pair(
            pki,
            "ca",
            ca_key,
            _builder(ca_name, ca_name, ca_key, ca=True).sign(ca_key, hashes.SHA256()),
        )
    ca_key, ca_cert = _load_ca(pki)
    for name, (cn, org, sans) in SERVING_CERTS.items():
        cert = pki / f"{name}.crt"
        if not cert.exists() or _sans(cert) != set(sans):
            _issue(pki, name, _name(cn, org), ca_key, ca_cert, server_sans=sans)
    for name, (cn, org) in CLIENT_CERTS.items():
        if not (pki / f"{name}.crt").exists():
            _issue(pki, name, _name(cn, org), ca_key, ca_cert)
    if not (pki / "sa.key").exists():
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pki / "sa.key", sa_key)
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def ensure_client_cert(pki: Path, name: str, cn: str, org: str | None = None) -> None:
    """A client certificate `<name>.crt` for a program beside the cluster (Flux in the
    GitOps tier), issued by the cluster's CA when missing."""
    if not (pki / f"{name}.crt").exists():
        ca_key, ca_cert = _load_ca(pki)
        _issue(pki, name, _name(cn, org), ca_key, ca_cert)
