"""Command handlers, one module per family; importing this package fills the table."""

from commands import messages, queries, registration, rooms

__all__ = ["messages", "queries", "registration", "rooms"]
