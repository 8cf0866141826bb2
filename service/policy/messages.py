"""Which text of a chat gets routed: RouteLLM routes on the last user message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.policy.model_string import RoutingError

ROUTE_ON = ("last_user", "last_message", "all_user")


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content if isinstance(content, list | tuple) else ():
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Mapping):
            if part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
        elif getattr(part, "type", "text") == "text" and isinstance(getattr(part, "text", None), str):
            parts.append(part.text)
    return "\n".join(parts)


def _field(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, Mapping) else getattr(message, key, None)


def routed_text(messages: Sequence[Any], route_on: str = "last_user") -> str:
    """The text to score: the last user message (default), the last message, or all user turns.

    Messages may be dicts, objects with role/content (SDK types) or (role, content) pairs.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise RoutingError("messages must be a non-empty list")
    pairs = [
        (m[0], m[1]) if isinstance(m, tuple) else (_field(m, "role"), _field(m, "content")) for m in messages
    ]
    if route_on == "last_message":
        return text_of(pairs[-1][1])
    users = [text_of(content) for role, content in pairs if role == "user"]
    if not users:
        raise RoutingError("messages has no user turn; routing needs at least one message with role 'user'")
    return "\n".join(users) if route_on == "all_user" else users[-1]
