"""A tiny external identity provider for tests: signs JWTs, serves its public JWKS over HTTP.

It stands in for Supabase/Auth0/Keycloak: a real HTTP server on 127.0.0.1 (random port,
threaded ``http.server``) publishing RSA (RS256) and EC P-256 (ES256) keys, with key
rotation and a count of JWKS downloads so tests can see when the API refetches.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

JWKS_PATH = "/.well-known/jwks.json"
ALGORITHMS = {"RS256": "RSA", "ES256": "EC"}


def generate_key(alg: str, kid: str) -> RSAKey | ECKey:
    parameters: Any = {"kid": kid, "use": "sig", "alg": alg}
    if ALGORITHMS[alg] == "RSA":
        return RSAKey.generate_key(2048, parameters=parameters, private=True)
    return ECKey.generate_key("P-256", parameters=parameters, private=True)


class JwksIssuer:
    def __init__(self, issuer: str = "https://idp.test/", audience: str = "authenticated") -> None:
        self.issuer = issuer
        self.audience = audience
        self.published: dict[str, RSAKey | ECKey] = {}
        self.jwks_requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- keys -------------------------------------------------------------------
    def publish(self, alg: str, kid: str) -> RSAKey | ECKey:
        key = generate_key(alg, kid)
        with self._lock:
            self.published[kid] = key
        return key

    def retire(self, kid: str) -> None:
        with self._lock:
            del self.published[kid]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.as_dict(private=False) for key in self.published.values()]}

    # --- tokens -----------------------------------------------------------------
    def claims(self, email: str, *, tenant: str | None = None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": email,
            "email": email,
            "iat": now,
            "exp": now + 600,
        }
        if tenant is not None:
            claims["app_metadata"] = {"tenant_id": tenant}
        claims.update(overrides)
        return claims

    def sign(self, claims: dict[str, Any], kid: str, key: RSAKey | ECKey | None = None) -> str:
        """Sign with a published key (or ``key``, e.g. one that was never published)."""
        signing = key if key is not None else self.published[kid]
        alg = str(signing.as_dict()["alg"])
        return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"}, claims, signing)

    def token(self, email: str, kid: str, *, tenant: str | None = None, **overrides: Any) -> str:
        return self.sign(self.claims(email, tenant=tenant, **overrides), kid)

    # --- server -----------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "issuer not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{JWKS_PATH}"

    @contextmanager
    def serving(self) -> Iterator[JwksIssuer]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with issuer._lock:
                    issuer.jwks_requests += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
