"""The X API client side, for every flavour: sending DMs (`dm`), managing webhooks and
subscriptions (`management`), and the idempotent ensure of both (`registration`)."""
