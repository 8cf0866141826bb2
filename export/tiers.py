"""Model tiers: which models of the pool stand for "strong" (GPT-4 class) and "weak"
(Mixtral class) when a prompt has no label for the exact default pair.

Used by the default-pair validation on the train hold-out.
"""

from __future__ import annotations

DEFAULT_STRONG = "gpt-4-1106-preview"
DEFAULT_WEAK = "mixtral-8x7b-instruct-v0.1"

STRONG_TIER = (
    "gpt-4-1106-preview",
    "gpt-4-0314",
    "gpt-4-turbo-2024-04-09",
    "gpt-4o",
    "gpt-4o-2024-05-13",
    "gpt-4o-2024-08-06",
    "claude-3-opus-20240229",
    "claude-3-5-sonnet-20240620",
    "gemini-1.5-pro",
    "gemini-1.5-pro-002",
    "llama-3.1-405b-inst-fp8",
    "mistral-large-2",
)
WEAK_TIER = (
    "mixtral-8x7b-instruct-v0.1",
    "mixtral-8x7b-v0.1",
    "mistral-7b-instruct-v0.2",
    "llama-2-70b-chat",
    "llama-3-8b-instruct",
    "llama-3.1-8b-instruct",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
    "claude-instant-1",
    "qwen1.5-72b-chat",
    "gemma-2-9b-it",
    "vicuna-33b-v1.3",
)
