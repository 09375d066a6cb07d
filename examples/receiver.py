#!/usr/bin/env python3
"""A stand-in assistant service for trying `forward`: prints every POST it gets
and answers 200. Usage: python3 examples/receiver.py [PORT] (default 9000)."""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        event = json.loads(body)
        print(f"{event['action']:5} {event['trigger']} {event['roomUrl']} "
              f"(Idempotency-Key: {self.headers.get('Idempotency-Key')})", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
