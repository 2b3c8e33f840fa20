"""A minimal receiver for the sniffer's default `batch` format, with nothing but Python's
standard library: checks the bearer token, drops batches it has already seen (delivery is at
least once), writes each record as one JSON line, and keeps the loss count the batches report.

    EXPECTED_TOKEN=... python3 receiver.py --port 9000 --out records.ndjson

Point the sniffer at it with OUTPUT_URL=http://<host>:9000/ (and OUTPUT_URL_AUTH_TOKEN). Every
record matched is either in the output or counted in `dropped`: the two add up to the sniffer's
`matched`. Tested by the sniffer's integration tests (`formats::the_plain_receiver_recipe_works`).
"""

import argparse
import gzip
import hmac
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIMIT = 64 << 20  # bytes per body: far above a batch of 100,000 records


class Receiver(BaseHTTPRequestHandler):
    seen = set()  # (agent.instance, seq) of the batches written
    dropped = 0
    lock = threading.Lock()

    def do_POST(self):
        token = os.environ.get("EXPECTED_TOKEN", "")
        given = self.headers.get("Authorization", "")
        if token and not hmac.compare_digest(given, f"Bearer {token}"):
            return self.answer(401, "bad token")  # not retried: the sniffer counts it dropped
        length = int(self.headers.get("Content-Length", "0"))
        if length > LIMIT:
            return self.answer(413, "too large")
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        try:
            batch = json.loads(body)
            key = (batch["agent"]["instance"], batch["seq"])
        except (ValueError, KeyError, TypeError):
            return self.answer(400, "not a batch")
        with Receiver.lock:
            if key not in Receiver.seen:
                Receiver.seen.add(key)
                Receiver.dropped += batch["dropped"]
                for record in batch["records"]:
                    record["pod"] = batch["agent"]["pod"]
                    self.server.out.write(json.dumps(record) + "\n")
                self.server.out.flush()
        self.answer(204, "")

    def answer(self, status, text):
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args):
        pass


def stop(signum, frame):
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    # SIGTERM is how Kubernetes (and most supervisors) stop a process; SIGINT is set too, since
    # a shell starts background jobs with it ignored and Python then keeps it ignored.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    server = ThreadingHTTPServer((args.host, args.port), Receiver)
    server.out = sys.stdout if args.out == "-" else open(args.out, "a", encoding="utf-8")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        print(json.dumps({"batches": len(Receiver.seen), "dropped": Receiver.dropped}),
              file=sys.stderr)


if __name__ == "__main__":
    main()
