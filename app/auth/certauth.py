"""OAuth client authentication by certificate (RFC 8705, section 2).

A client registered for it sends only its ``client_id`` to the token endpoint, over a
connection that presents its certificate (or behind a proxy that forwards it,
``ENRICH_CLIENT_CERT_HEADER``); it has no secret. Two ways to know it is the client's:

- ``tls_client_auth`` (PKI): the certificate chains to a CA of ``ENRICH_CLIENT_CA_CERTS`` and
  its subject is the client's registered distinguished name. The chain is checked here, on
  every token request, whoever terminated the TLS: a proxy that accepts any certificate (as
  one must for self-signed clients) cannot let a look-alike subject through.
- ``self_signed_tls_client_auth``: the certificate is one the client registered (by its
  SHA-256 thumbprint; several while one replaces another). It proves possession of the key
  the TLS handshake checked, nothing more: no CA is involved.

Either way the token is bound to the certificate (``cnf``, section 3).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from app.core.certs import thumbprint
from app.core.errors import AppError
from app.core.models import Client

CLIENT_SECRET = "client_secret"  # client_secret_basic or client_secret_post
TLS_CLIENT_AUTH = "tls_client_auth"
SELF_SIGNED_TLS_CLIENT_AUTH = "self_signed_tls_client_auth"
CERTIFICATE_METHODS = (TLS_CLIENT_AUTH, SELF_SIGNED_TLS_CLIENT_AUTH)


def _tidy(text: str) -> str:
    """RFC 4514 text without the spaces people put around ``,``, ``+`` and ``=`` (as in
    OpenSSL's ``CN = a, O = b``), attribute types in upper case; escapes kept."""
    parts: list[str] = []  # attribute types and values, in turn
    current, escaped = [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char in ",+=":
            parts.append("".join(current))
            parts.append(char)
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    tidy = []
    for index, part in enumerate(parts):
        if part in (",", "+", "="):
            tidy.append(part)
            continue
        part = part.lstrip()
        # (a value's trailing space is kept only when escaped: "a\\ ")
        while part.endswith(" ") and not part.endswith("\\ "):
            part = part[:-1]
        is_type = index + 1 < len(parts) and parts[index + 1] == "="
        tidy.append(part.upper() if is_type else part)
    return "".join(tidy)


def subject_dn(text: str) -> str:
    """A distinguished name in RFC 4514 form, as the service compares it (``CN=a,O=b``: the
    most specific part first, as ``openssl x509 -noout -subject -nameopt RFC2253`` prints)."""
    try:
        name = x509.Name.from_rfc4514_string(_tidy(text.strip()))
    except ValueError as exc:
        raise AppError(f"not an RFC 4514 distinguished name: {text!r}") from exc
    if not len(name):
        raise AppError("the subject distinguished name is empty")
    return name.rfc4514_string()


def certificate_thumbprint(pem: bytes) -> str:
    """The ``x5t#S256`` of a PEM certificate (the one a self-signed client registers)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise AppError("not a PEM certificate") from exc
    return thumbprint(cert.public_bytes(Encoding.DER))


class CertificateAuthorities:
    """The CAs that ``tls_client_auth`` certificates must chain to (none: no such client
    authenticates). Loaded once at start, from a PEM bundle."""

    def __init__(self, bundle: str | None) -> None:
        self.store: Store | None = None
        if bundle:
            try:
                certs = x509.load_pem_x509_certificates(Path(bundle).read_bytes())
            except (OSError, ValueError) as exc:
                raise AppError(f"ENRICH_CLIENT_CA_CERTS: no PEM certificates in {bundle}") from exc
            self.store = Store(certs)

    def verified_subject(self, der: bytes) -> str | None:
        """The certificate's subject when it chains to one of the CAs (and is valid now)."""
        if self.store is None:
            return None
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        # The chain's signatures, validity and CA constraints; what the certificate itself
        # carries (key usage, names) is the client's business, as with OpenSSL's own check.
        ca_policy = ExtensionPolicy.permit_all().require_present(
            x509.BasicConstraints, Criticality.AGNOSTIC, None
        )
        verifier = (
            PolicyBuilder()
            .store(self.store)
            .time(dt.datetime.now(dt.UTC))
            .extension_policies(ca_policy=ca_policy, ee_policy=ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        try:
            verifier.verify(cert, [])
        except VerificationError:
            return None
        return cert.subject.rfc4514_string()

    def identifies(self, client: Client, der: bytes | None) -> bool:
        """Whether the certificate ``der`` (None: none was presented) is ``client``'s."""
        if der is None:
            return False
        if client.auth_method == SELF_SIGNED_TLS_CLIENT_AUTH:
            return thumbprint(der) in (client.tls_thumbprints or "").split()
        if client.auth_method == TLS_CLIENT_AUTH and client.tls_subject_dn:
            return self.verified_subject(der) == client.tls_subject_dn
        return False
