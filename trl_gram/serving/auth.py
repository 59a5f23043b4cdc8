"""API-key check for the reward server, usable by clients that can only be given a URL.

The key is accepted as ``Authorization: Bearer <key>``, as the query parameter ``api_key=<key>``, or as a path prefix
``/key/<key>/<endpoint>`` (OpenRLHF's ``--remote_rm_url http://host:8000/key/<key>/get_reward``). It is compared in
constant time (``hmac.compare_digest``) and removed from the request's path and query before anything else sees them,
so access logs never show it. Every path but ``/health`` and ``/ready`` needs it (``/docs`` and ``/openapi.json``
included).
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qsl, urlencode

OPEN_PATHS = ("/health", "/ready")
QUERY_PARAM = "api_key"
PATH_PREFIX = "/key/"


class KeyMiddleware:
    """Pure ASGI middleware requiring ``key`` on every HTTP request but health and readiness.

    Args:
        app: The wrapped ASGI application.
        key (`str`): The key.
    """

    def __init__(self, app, key: str):
        self.app = app
        self._key = key.encode("utf-8")

    def _matches(self, candidate) -> bool:
        if isinstance(candidate, str):
            candidate = candidate.encode("utf-8", "surrogatepass")
        return candidate is not None and hmac.compare_digest(candidate, self._key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = []
        path = scope.get("path", "")
        if path.startswith(PATH_PREFIX):  # /key/<key>/rest: take the key out of the path
            token, _, rest = path[len(PATH_PREFIX) :].partition("/")
            given.append(token)
            path = "/" + rest
            scope["path"] = path
            scope["raw_path"] = path.encode("utf-8", "surrogatepass")
        query = scope.get("query_string", b"")
        if query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            given += [v for k, v in pairs if k == QUERY_PARAM]
            scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != QUERY_PARAM]).encode("latin-1")
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given.append(token.strip())
        if path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        ok = False
        for candidate in given:  # compare every candidate, so timing does not depend on which one matched
            ok = self._matches(candidate) | ok
        if ok:
            return await self.app(scope, receive, send)
        body = json.dumps(
            {
                "error": "Missing or wrong API key: send `Authorization: Bearer <key>`, `?api_key=<key>`, or put it "
                "in the path as /key/<key>/<endpoint>."
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
