"""Hold many concurrent IMAP connections open, for the IMAP benchmark's memory measurement.

Run as a child process: ``imap_idlers.py --port P --count N --mode MODE [--user U --password
W]``.  Modes: ``greeting`` (plaintext connection that reads the greeting and waits), ``tls``
(implicit TLS, greeting, then waits), ``idle`` (implicit TLS, AUTHENTICATE SCRAM-SHA-256
with SASL-IR, SELECT INBOX, IDLE) and ``idle-plain`` (the same without TLS: the server needs
``[auth] plaintext = true``).  At most ``--concurrency`` connections are being opened at
once.  When every connection is open (or ``--deadline`` seconds have passed) it prints one JSON
line ``{"opened": n, "failed": m, "seconds": s, "errors": [...]}``, then holds the connections
until its stdin closes, and exits.  SCRAM keeps the server's cost per login to a few HMACs;
LOGIN would cost an argon2 verification (~0.1 s of CPU) per session.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import ssl
import sys
import time

from imap_client import ScramClient, client_tls_context

HOST = "127.0.0.1"


async def expect(reader: asyncio.StreamReader, prefix: bytes) -> bytes:
    line = await reader.readline()
    if not line.startswith(prefix):
        raise ConnectionError(f"expected {prefix!r}, got {line[:120]!r}")
    return line


async def until_tagged(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line.startswith(tag + b" "):
            if not line.startswith(tag + b" OK"):
                raise ConnectionError(line[:200].decode(errors="replace"))
            return line


async def open_one(
    args: argparse.Namespace, tls: ssl.SSLContext | None, scram: ScramClient | None
) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(
        HOST, args.port, ssl=tls, server_hostname="localhost" if tls else None, limit=2**20
    )
    try:
        await expect(reader, b"* OK")
        if scram is not None:
            first, nonce = scram.first()
            writer.write(b"a1 AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(first) + b"\r\n")
            challenge = await expect(reader, b"+")
            final = scram.final(first, nonce, base64.b64decode(challenge[1:].strip()))
            writer.write(base64.b64encode(final) + b"\r\n")
            line = await reader.readline()
            if line.startswith(b"+"):  # server-final as a challenge: answer with an empty line
                writer.write(b"\r\n")
                await until_tagged(reader, b"a1")
            elif not line.startswith(b"a1 OK"):
                raise ConnectionError(line[:200].decode(errors="replace"))
            writer.write(b"a2 SELECT INBOX\r\n")
            await until_tagged(reader, b"a2")
            writer.write(b"a3 IDLE\r\n")
            await expect(reader, b"+")
    except BaseException:
        writer.close()
        raise
    return writer


async def main_async(args: argparse.Namespace) -> None:
    scram = ScramClient(args.user, args.password) if args.mode.startswith("idle") else None
    tls = None if args.mode in ("greeting", "idle-plain") else client_tls_context()
    writers: list[asyncio.StreamWriter] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(args.concurrency)

    async def one() -> None:
        async with gate:
            try:
                writers.append(await open_one(args, tls, scram))
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    started = time.monotonic()
    tasks = [asyncio.create_task(one()) for _ in range(args.count)]
    await asyncio.wait(tasks, timeout=args.deadline)
    for task in tasks:
        task.cancel()
    seconds = time.monotonic() - started
    report = {
        "opened": len(writers),
        "failed": args.count - len(writers),
        "seconds": round(seconds, 2),
        "errors": sorted(set(errors))[:3],
    }
    print(json.dumps(report), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for writer in writers:
        writer.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument(
        "--mode", choices=("greeting", "tls", "idle", "idle-plain"), required=True
    )
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--deadline", type=float, default=100.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
