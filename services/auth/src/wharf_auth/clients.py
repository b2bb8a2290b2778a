"""Who signs in from where, coarsely: what an account's owner is shown about a session or an event,
and what a sign-in alert compares. Never the full address, never the raw User-Agent."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import ua_parser
from flask import request

UNKNOWN_CLIENT = "Unknown client"
UNKNOWN_NETWORK = "unknown"
# The part of an address kept: a whole IPv4 /24 or IPv6 /48 (a site), never one host.
IPV4_PREFIX = 24
IPV6_PREFIX = 48
MAX_USER_AGENT = 512  # the parser's work stays bounded whatever a client sends


@dataclass(frozen=True)
class Client:
    description: str  # e.g. "Firefox on Linux"
    network: str  # e.g. "203.0.113.0/24"


def describe(user_agent: str) -> str:
    """Browser (or program) family and operating system family, without versions."""
    result = ua_parser.parse(user_agent[:MAX_USER_AGENT])
    program = result.user_agent.family if result.user_agent else None
    system = result.os.family if result.os else None
    if program and system:
        return f"{program} on {system}"[:100]
    return (program or system or UNKNOWN_CLIENT)[:100]


def network_of(address: str | None) -> str:
    """The address's network prefix (``203.0.113.0/24``, ``2001:db8:1::/48``)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return UNKNOWN_NETWORK
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def of_request() -> Client:
    """The calling client, from the request's User-Agent and address (nginx's, see ProxyFix)."""
    return Client(describe(request.headers.get("User-Agent", "")), network_of(request.remote_addr))


def warm_up() -> None:
    """Load the parser's rules now (about half a second), not in the first sign-in."""
    ua_parser.parse("Mozilla/5.0")
