"""Calling telephone numbers: the dial plan (docs/dialplan.md)."""
