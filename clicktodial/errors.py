"""
The exception a plugin raises for a bad option (a pure module: plugins import it freely).
"""

from __future__ import annotations

__all__ = ["PluginConfigError"]


class PluginConfigError(ValueError):
    """
    A plugin's option (a key of its ``[KIND:NAME]`` section) is missing, unknown or invalid.
    The daemon turns it into the one-line configuration error ``FILE: [KIND:NAME] KEY:
    MESSAGE``.

    :ivar key: the offending key, or ``None`` when the problem is not about one key.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key

    def __str__(self) -> str:
        return self.message
