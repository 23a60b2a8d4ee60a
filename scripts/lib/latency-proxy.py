#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed one-way
latency in each direction, order kept: a distant object store on loopback
(this kernel has no netem).

    latency-proxy.py TARGET_PORT ONE_WAY_MS

Prints the port it listens on, then serves until killed.
"""
import asyncio
import sys


async def pipe(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def send():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except OSError:
            pass

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(1 << 16)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
    except OSError:
        queue.put_nowait((loop.time(), b""))
    try:
        await sender
    except OSError:
        pass


async def main():
    target_port, one_way_ms = int(sys.argv[1]), float(sys.argv[2])
    delay = one_way_ms / 1000.0

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, up_writer, delay),
            pipe(up_reader, client_writer, delay),
        )
        for w in (client_writer, up_writer):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
