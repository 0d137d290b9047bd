"""ircish: a small multi-room, IRC-style chat server and terminal client."""

__version__ = "0.1.0"
