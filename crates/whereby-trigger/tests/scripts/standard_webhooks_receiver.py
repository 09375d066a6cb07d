"""A `forward` receiver that verifies with the `standardwebhooks` package from PyPI,
for tests/it/signed_forward.rs: the check of whereby-trigger's signatures by an
implementation nobody here wrote.

Usage: standard_webhooks_receiver.py SECRET OUT

Listens on 127.0.0.1 on a port the OS picks and prints `listening PORT` once it
does. For each POST it verifies the body as received with
`standardwebhooks.webhooks.Webhook(SECRET).verify(body, headers)`, and verifies
again with the body's last byte changed, which must fail. It appends one JSON
line per request to OUT (flushed before answering, so a test that sees the line
sees all of it):

    {"id": webhook-id, "ok": bool, "error": str|null,
     "tampered_rejected": bool, "body": str}

and answers 204 if the request verified, 400 otherwise. Runs until killed.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret, out = sys.argv[1], sys.argv[2]
webhook = Webhook(secret)


def verifies(body, headers):
    """None if `body` verifies with `headers`, else the library's message."""
    try:
        webhook.verify(body, headers)
        return None
    except WebhookVerificationError as e:
        return str(e) or type(e).__name__


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the forward client pools connections.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name: value for name, value in self.headers.items()}
        error = verifies(body, headers)
        tampered = body[:-1] + bytes([body[-1] ^ 1]) if body else b"x"
        record = {
            "id": self.headers.get("webhook-id"),
            "ok": error is None,
            "error": error,
            "tampered_rejected": verifies(tampered, headers) is not None,
            "body": body.decode("utf-8", "replace"),
        }
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        self.send_response(204 if error is None else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        # The test reads stdout; requests are in OUT.
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
