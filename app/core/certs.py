"""Client certificates and the access tokens bound to them (RFC 8705, section 3).

A caller's certificate is known by its SHA-256 thumbprint (``x5t#S256``: the base64url digest
of its DER bytes, unpadded). When ``enrich serve`` terminates TLS itself, the HTTP protocol
puts the thumbprint of the certificate a connection presented in each request's scope
(``CERT_KEY``, once per connection). A token issued to a caller that presented one carries it
in its ``cnf`` claim, and every request with that token must present the same certificate.
Where a proxy terminates TLS in front of the service, it forwards the certificate in a header
(``ENRICH_CLIENT_CERT_HEADER``), believed from ``ENRICH_TRUSTED_PROXIES`` only.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import urllib.parse
from typing import Any

from app.core.addresses import NetworkSet

# The thumbprint of the client certificate the request's connection presented (absent: none),
# and the certificate itself (DER), for the token endpoint's client authentication by it.
CERT_KEY = "enrich.client_cert"
CERT_DER_KEY = "enrich.client_cert_der"


def thumbprint(der: bytes) -> str:
    """RFC 8705's ``x5t#S256`` of a certificate given in DER."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


# A forwarded certificate longer than this is not one (a chain of a few certificates is ~4 KB).
MAX_FORWARDED_BYTES = 16_384


def forwarded_certificate(value: bytes) -> bytes | None:
    """The DER bytes of a client certificate a TLS-terminating proxy forwarded in a header,
    or None when the value is not one. Three spellings: RFC 9440's ``Client-Cert`` (the DER
    in base64 between colons), nginx's ``$ssl_client_escaped_cert`` (URL-encoded PEM), and
    base64 DER as is (HAProxy's ``%[ssl_c_der,base64]``)."""
    if not value or len(value) > MAX_FORWARDED_BYTES:
        return None
    text = value.decode("latin-1").strip()
    if "BEGIN" in text:
        pem = urllib.parse.unquote(text)
        try:
            der = ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN") :])
        except ValueError:
            return None
    else:
        try:
            der = base64.b64decode(text.strip(":"), validate=True)
        except ValueError:
            return None
    return der if der[:1] == b"\x30" else None  # (a certificate is an ASN.1 SEQUENCE)


def take_forwarded_certificate(scope: dict[str, Any], header: bytes, proxies: NetworkSet) -> None:
    """Behind a trusted proxy that terminates TLS, the caller's certificate is the one in
    ``header`` (none when the header is absent), never the proxy's own; from any other
    address the header is ignored. Sets or clears ``CERT_KEY`` and ``CERT_DER_KEY`` in
    ``scope``."""
    client = scope.get("client")
    if not client or client[0] not in proxies:
        return
    scope.pop(CERT_KEY, None)
    scope.pop(CERT_DER_KEY, None)
    for name, value in scope["headers"]:
        if name == header:
            der = forwarded_certificate(value)
            if der is not None:
                scope[CERT_KEY] = thumbprint(der)
                scope[CERT_DER_KEY] = der
            return
