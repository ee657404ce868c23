"""Benchmark (issue 21): the floor of one request on this machine, whatever the server does.

    .venv/bin/python bench/request_floor.py [--calls 2000] [--repeat 3]

The forest-at-256 goal asks 40 requests (10,000 rows at 256 a request) to cost at most 0.176 x the time
ONNX Runtime takes for the same batches in process (0.85x its speed). This measures what a request costs
when the server does nothing, each in a separate server process, median of --calls calls per round:

- `GET /v2/health/ready` on the real model server (`python -m model_server`, uvicorn with uvloop and
  httptools), over the standard library's `http.client` on a kept-alive connection — the client the
  binary inference path uses;
- a gRPC unary call of a 20 KB body answered with 1 KB (grpcio, a generic handler, no protobuf work) —
  the transport Triton and KServe offer beside HTTP, for comparison.

Compare with the forest's figures from `comparison.py` (the in-process time of the 40 batches).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.inference import free_port, start_server  # noqa: E402

ECHO = "/floor.Echo/Call"


def serve_grpc(port: int) -> None:
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, _: request[:1000])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Echo", {"Call": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def http_round(port: int, calls: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        connection.request("GET", "/v2/health/ready")
        answer = connection.getresponse()
        answer.read()
        times.append(time.perf_counter() - start)
        assert answer.status == 200, answer.status
    connection.close()
    return statistics.median(times)


def grpc_round(port: int, calls: int) -> float:
    import grpc

    body = os.urandom(20_000)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(ECHO)
        grpc.channel_ready_future(channel).result(timeout=30)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            answer = call(body)
            times.append(time.perf_counter() - start)
            assert len(answer) == 1000
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve-grpc", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_grpc:
        serve_grpc(args.serve_grpc)
        return
    figures: dict[str, list[float]] = {"http.client GET on the model server": [], "gRPC unary 20 KB": []}
    with tempfile.TemporaryDirectory() as models:
        http_port, grpc_port = free_port(), free_port()
        model_server = start_server(Path(models), http_port)
        echo = subprocess.Popen([sys.executable, __file__, "--serve-grpc", str(grpc_port)])
        try:
            http_round(http_port, 100), grpc_round(grpc_port, 100)  # warm both
            for number in range(args.repeat):
                figures["http.client GET on the model server"].append(http_round(http_port, args.calls))
                figures["gRPC unary 20 KB"].append(grpc_round(grpc_port, args.calls))
                print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1] * 1e3:.3f} ms" for k, v in figures.items()))
        finally:
            for process in (model_server, echo):
                process.terminate()
                process.wait(10)
    print(
        json.dumps(
            {
                "ms_per_request": {k: [round(v * 1e3, 3) for v in values] for k, values in figures.items()},
                "cpus": os.cpu_count(),
                "load": os.getloadavg()[0],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
