"""A small OpenAI-compatible backend for tests: answers with its own name, streams chunks.

    python tests/fake_backend.py --name strong-backend --port 0 --port-file PATH

It writes its bound port to --port-file, and records each request body so tests can check
what the gateway forwarded (GET /_requests). POST /_fail makes it answer 500 from then on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web


def make_app(name: str) -> web.Application:
    state = {"requests": [], "fail": False}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state["requests"].append({"body": body, "auth": request.headers.get("Authorization", "")})
        if state["fail"]:
            return web.json_response(
                {"error": {"message": "backend down", "type": "server_error"}}, status=500
            )
        text = f"answer from {name}"
        created = int(time.time())
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": f"chatcmpl-{name}",
                    "object": "chat.completion",
                    "created": created,
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, word in enumerate(text.split(" ")):
            chunk = {
                "id": f"chatcmpl-{name}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "delta": {"content": ("" if i == 0 else " ") + word}, "finish_reason": None}
                ],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.01)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def requests(_: web.Request) -> web.Response:
        return web.json_response(state["requests"])

    async def fail(_: web.Request) -> web.Response:
        state["fail"] = True
        return web.json_response({"fail": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/_requests", requests)
    app.router.add_post("/_fail", fail)
    return app


async def main(args: argparse.Namespace) -> None:
    runner = web.AppRunner(make_app(args.name))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the bound ephemeral port
    with open(args.port_file, "w") as fh:
        fh.write(str(port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    asyncio.run(main(parser.parse_args()))
