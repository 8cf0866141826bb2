"""Errors shared by every layer; transports map them to gRPC status / HTTP codes."""

from __future__ import annotations


class LmrouteError(Exception):
    """Base class for every error lmroute raises on purpose."""


class ArtifactError(LmrouteError):
    """A router artifact is missing, corrupt, or of an unsupported format."""


class UnknownRouterError(LmrouteError):
    """A router name that is not configured; the message lists the available ones."""

    def __init__(self, name: str, available: list[str] | tuple[str, ...]) -> None:
        self.name = name
        self.available = sorted(available)
        super().__init__(f"unknown router {name!r}; available routers: {', '.join(self.available)}")


class UnknownModelError(LmrouteError):
    """A model name the router has no vector for; the message lists the known ones."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown model {name!r}; known models: {', '.join(self.known)}")


class InvalidThresholdError(LmrouteError):
    """A threshold outside [0, 1] or NaN, or a strong share outside (0, 1)."""


class DataLayoutError(LmrouteError):
    """A data directory that is missing or does not have the expected layout."""
