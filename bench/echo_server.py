"""The transport ceiling: an asyncio MLLP server that answers every frame with a constant ACK.

python -m bench.echo_server --port P     (prints "listening on 127.0.0.1:PORT")
"""

from __future__ import annotations

import argparse
import asyncio

from pamfr.transport.server import MLLPServer

ACK = b"MSH|^~\\&|DPI|CHU-X|GAM|CHU-X|20240306111154||ACK^A28^ACK|1|P|2.5\rMSA|AA|1\r"


class ConstantAck:
    async def on_frame(self, payload: bytes, peer) -> bytes:
        return ACK

    async def on_oversized(self, head: bytes, size: int, peer) -> bytes:
        return ACK


async def serve(port: int) -> None:
    server = MLLPServer(ConstantAck(), port=port)
    await server.start()
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
