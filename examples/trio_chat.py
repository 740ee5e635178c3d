"""The same client under trio: a chat, then a streamed answer.

python examples/trio_chat.py
"""

from __future__ import annotations

import trio
from _connect import open_client

import baiduwx_async as wx


async def main() -> None:
    async with open_client() as client:
        reply = await client.chat("mpt30b", [wx.user("Please introduce The Great Wall")])
        print(reply.result)

        conversation = [
            wx.user("Please introduce The Great Wall"),
            wx.assistant(reply.result),
            wx.user("How long is it?"),
        ]
        with trio.fail_after(60):
            async with client.chat_stream("mpt30b", conversation) as stream:
                async for chunk in stream:
                    print(chunk.result, end="", flush=True)
        print(f"\n({stream.usage.total_tokens if stream.usage else 0} tokens)")


if __name__ == "__main__":
    trio.run(main)
