"""X Chat (end-to-end encrypted DMs) for the bot, on X's own crypto SDK `chatxdk`.

One job per module, pure parts apart from I/O:
- `errors`: the failure classes, each with a bounded `reason` usable as a metric label.
- `wire`: X's JSON shapes (`chat.received`, public-key records, answers), parsed and checked.
- `identity`: the bot's key pair: generate, load from the secret setting, the registration
  body, "does X have this key".
- `keyring`: conversation keys the bot has learned, sealed for the store.
- `crypto`: the SDK adapter: decrypt a delivery, encrypt a reply.
- `keycache`: senders' public keys, cached with a TTL and a size bound.
- `client`: the HTTP calls (OAuth 1.0a through tweepy, like the DM sender).

Plaintext exists only inside `crypto.DecryptedMessage.text` and the caller's reply text; no
module here logs, stores or puts it in an exception message.
"""
