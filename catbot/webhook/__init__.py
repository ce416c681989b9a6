"""The X-facing HTTP side: what happens between X's POST and the 200.

- `routes`: the request handlers: the CRC answer; for a delivery, HTTP limits, the body's
  arrival and the signature, then the answer to X.
- `signature`: the constant-time check, current and previous consumer secret.
- `ingest`: a verified body parsed, each event given its fate, the answerable ones queued
  in one store call, everything counted.
- `events`: the pydantic parsing of every envelope X sends (Account Activity, X Activity
  API, `chat.received`) into `models.InboundDM`.
"""

from __future__ import annotations

from catbot.webhook.events import parse_delivery
from catbot.webhook.ingest import Ingest, IngestPolicy
from catbot.webhook.routes import WebhookHandler, WebhookPolicy, add_routes
from catbot.webhook.signature import SignatureVerifier

__all__ = [
    "Ingest",
    "IngestPolicy",
    "SignatureVerifier",
    "WebhookHandler",
    "WebhookPolicy",
    "add_routes",
    "parse_delivery",
]
