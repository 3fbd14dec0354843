"""gzip for clients that ask (`Accept-Encoding: gzip`), on answers large enough to gain from
it: the settings app.py gives Starlette's `GZipMiddleware`, and the same compression for the
read path (`read_path.py`), which answers ahead of that middleware."""

from __future__ import annotations

import asyncio
import zlib

__all__ = ["GZIP_LEVEL", "GZIP_MINIMUM_BYTES", "gzip_body"]

# Smaller answers (a read, mostly) are sent as they are: not worth the CPU.
GZIP_MINIMUM_BYTES = 8192
GZIP_LEVEL = 5
# Past this, compressed in a thread (as Starlette does) so the event loop keeps serving.
_THREAD_BYTES = 128 * 1024


def _compress(body: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


async def gzip_body(body: bytes) -> bytes:
    """`body` as a gzip stream, as `GZipMiddleware` compresses a whole answer."""
    if len(body) >= _THREAD_BYTES:
        return await asyncio.to_thread(_compress, body)
    return _compress(body)
