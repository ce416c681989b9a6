"""catbot: a webhook daemon that answers direct messages on X with cat facts."""

__version__ = "0.1.0"
