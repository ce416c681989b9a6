"""Pure URL rules shared by start-up configuration and the code that fetches from URLs."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["https_unless_loopback", "is_loopback_host"]


def is_loopback_host(host: str | None) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1); brackets around IPv6 allowed."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def https_unless_loopback(url: str) -> str | None:
    """Why `url` may not be fetched from, or None: https, or http on a loopback host only.

    Plain http off loopback lets anyone on the path read or rewrite what comes back; for a
    fact source that means choosing the text the bot DMs to people.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - evaluated for its ValueError on a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if not host:
        return "has no host"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if is_loopback_host(host):
            return None
        return "must use https (http is accepted on loopback hosts only)"
    return f"must be an https:// URL, not {parts.scheme or 'schemeless'}"
