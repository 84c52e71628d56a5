"""The floor: a bare pass-through proxy with the same server and client libraries as Airlock
(aiohttp + uvloop), no parsing, no recording. Usage: passthrough.py LISTEN_PORT UPSTREAM_BASE_URL"""

import sys

import aiohttp
import uvloop
from aiohttp import web


async def main(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)

    async def proxy(request: web.Request) -> web.StreamResponse:
        async with session.post(
            upstream + request.path[3:], data=await request.read(), headers={"Content-Type": "application/json"}
        ) as up:
            out = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers["Content-Type"]})
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    print(f"passthrough on {port} -> {upstream}", flush=True)
    await __import__("asyncio").Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
