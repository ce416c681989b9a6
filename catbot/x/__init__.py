"""The X API client side: sending DMs (and, later, managing webhooks) for every flavour."""
