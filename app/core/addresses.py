"""Address ranges: the metrics allowlist, trusted proxies and per-client allowlists."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Set in the ASGI scope when a trusted proxy named the caller (AccessMiddleware).
FORWARDED_KEY = "enrich.forwarded"
# Distinct caller addresses remembered per range set; Personalize uses a handful per region.
_MEMO_SIZE = 4096


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """Parse address ranges (CIDR, or a bare address) separated by spaces or commas."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not an address range: {item!r}") from exc
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:203.0.113.7 is 203.0.113.7
    return address


class NetworkSet:
    """Ranges and a memo of the answers given, so a known caller costs a dictionary lookup."""

    __slots__ = ("_memo", "networks")

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self._memo: dict[str, bool] = {}

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> NetworkSet:
        return cls(parse_networks(text))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        known = self._memo.get(host)
        if known is not None:
            return known
        address = parse_address(host)
        found = address is not None and any(address in net for net in self.networks)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[host] = found
        return found

    def __str__(self) -> str:
        return " ".join(str(n) for n in self.networks)


def forwarded_client(peer: str, header: str, trusted: NetworkSet) -> str:
    """The caller's address from X-Forwarded-For, trusting only the configured proxies.

    Walk the list from the right (the hop nearest to us) and skip trusted proxies; the first
    address that is not one is the caller. ``peer`` must itself be a trusted proxy.
    """
    hops = [h.strip() for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break  # garbage from somewhere: do not trust anything left of it
        text = str(address)
        if text not in trusted:
            return text
        peer = text
    return peer
