"""Produce at a fixed rate to a cluster and say what happened (scripts/slow-disk.sh).

Usage: /usr/bin/python3 scripts/produce-load.py SERVERS SECONDS RPS [STOP_FILE]

SERVERS: host:port,host:port,... (every node's gRPC address). Calls are started on a fixed
schedule of RPS per second (open loop, 32 worker threads, a 2 s deadline each); a call goes to the
node that answered the last successful one, and one refused (NOT_LEADER, NO_LEADER, any error)
goes on to the next node, so a leader change costs the calls in flight and the time to find the
new one. Prints one JSON object: ok, failed (by status code), latency percentiles of the ok calls
(from when each was due), and the longest time with no successful call completing ("longest_gap_s";
also measured from the start and to the end of the window). With STOP_FILE, the time from the
moment that file appears (the caller writes it as it SIGSTOPs a node) to the first call that
succeeds after it started ("recovered_after_s").
"""

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import grpc  # noqa: E402
from conduit_protos import log_pb2  # noqa: E402


def main():
    servers = sys.argv[1].split(",")
    seconds, rps = float(sys.argv[2]), float(sys.argv[3])
    stop_file = sys.argv[4] if len(sys.argv) > 4 else None
    channels = [grpc.insecure_channel(s) for s in servers]
    produce = [c.unary_unary("/log.v1.Log/Produce", request_serializer=log_pb2.ProduceRequest.SerializeToString,
                             response_deserializer=log_pb2.ProduceResponse.FromString) for c in channels]
    current = [0]
    lock = threading.Lock()
    results = []  # (due, start, end, code)
    value = b"x" * 100

    def call(due):
        with lock:
            node = current[0]
        start = time.monotonic()
        try:
            produce[node](log_pb2.ProduceRequest(topic="t", record=log_pb2.Record(value=value)), timeout=2)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
            with lock:
                if current[0] == node:
                    current[0] = (node + 1) % len(produce)
        end = time.monotonic()
        with lock:
            results.append((due, start, end, code))

    began = time.monotonic()
    stopped_at = None
    with ThreadPoolExecutor(max_workers=32) as pool:
        n = 0
        while True:
            due = began + n / rps
            if due - began >= seconds:
                break
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            if stop_file and stopped_at is None and os.path.exists(stop_file):
                stopped_at = time.monotonic()
            pool.submit(call, due)
            n += 1
        while stop_file and stopped_at is None and time.monotonic() - began < seconds:
            time.sleep(0.01)
    ended = time.monotonic()
    ok = sorted(r for r in results if r[3] == "OK")
    failed = {}
    for r in results:
        if r[3] != "OK":
            failed[r[3]] = failed.get(r[3], 0) + 1
    latencies = sorted((r[2] - r[0]) * 1000 for r in ok)

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None
    ends = sorted(r[2] for r in ok)
    points = [began] + ends + [ended]
    gap = max(b - a for a, b in zip(points, points[1:]))
    out = {"calls": len(results), "ok": len(ok), "failed": failed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
           "max_ms": round(latencies[-1], 1) if latencies else None, "longest_gap_s": round(gap, 2)}
    if stop_file:
        after = [r[2] for r in ok if stopped_at is not None and r[1] >= stopped_at]
        out["recovered_after_s"] = round(min(after) - stopped_at, 2) if after else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
