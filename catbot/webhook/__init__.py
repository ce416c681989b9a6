"""The X-facing HTTP side: CRC, signature check, event parsing and the webhook routes."""
