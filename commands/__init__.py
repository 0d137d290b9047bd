"""Command handlers, one module per family; importing this package fills the table."""

from commands import messages, moderation, queries, registration, rooms

__all__ = ["messages", "moderation", "queries", "registration", "rooms"]
