"""The OpenAI-compatible HTTP gateway: asks the Route RPC, forwards to the chosen LLM backend."""
