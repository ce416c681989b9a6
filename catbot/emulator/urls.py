"""Webhook URL rules, shared by start-up configuration and runtime registration."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# X rejects longer webhook URLs when they are registered.
MAX_WEBHOOK_URL_LENGTH = 200


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_url_problem(url: str) -> str | None:
    """Why X would refuse this webhook URL, or None when it is acceptable.

    X wants https; plain http is accepted on loopback only, so tests and the demo need no
    TLS while a misconfigured public URL still fails loudly.
    """
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        return f"webhook URL is longer than {MAX_WEBHOOK_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - evaluated for its ValueError on a bad port
    except ValueError as exc:
        return f"webhook URL is malformed: {exc}"
    if not host:
        return "webhook URL has no host"
    if parts.fragment:
        return "webhook URL must not have a fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if is_loopback_host(host):
            return None
        return "webhook URL must use https (http is accepted on loopback hosts only)"
    return f"webhook URL scheme must be https, not {parts.scheme or 'missing'!r}"
