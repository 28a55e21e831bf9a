#!/usr/bin/env python3
"""A webhook receiver for the benchmarks: answers every POST 200 at once and counts the rows.

Usage: bench/receiver.py PORT_FILE [STATUS]
Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening); GET /count answers
with the number of rows received so far. With STATUS (say 429) every POST gets that status
instead, and its rows are not counted.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

rows = 0
status = int(sys.argv[2]) if len(sys.argv) > 2 else 200
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global rows
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            count = len(json.loads(body).get("rows", []))
        except ValueError:
            count = 0
        if status == 200:
            with lock:
                rows += count
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        with lock:
            text = f"{rows}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[1], "w") as port_file:
        port_file.write(f"{server.server_address[1]}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
