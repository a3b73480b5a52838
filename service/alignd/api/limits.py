"""What a request may carry before any route sees it: a bounded body, and only text the databases can store.

`RequestLimits` is ASGI middleware, outside routing and the job-status fast path, so one check covers
every route:
- A JSON route's body is read here, up to `ALIGND_MAX_JSON_BODY_BYTES`: a declared Content-Length over
  the limit is refused before a byte is read, a chunked body as soon as it passes it (413). The routes
  that stream their bodies (`POST /v1/files`, the local store's signed `PUT`) keep their own limits.
- A NUL character in the URL path or query, or a NUL or lone surrogate anywhere in a JSON body (keys
  included), is a 400 whose `param` names the path parameter, query parameter or field (`storable.py`).

Its answers are the app's error envelope (`errors.envelope`); everything else passes through untouched.
"""

import json
from urllib.parse import parse_qsl

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alignd.api import storable
from alignd.api.errors import envelope
from alignd.errors import AligndError, PayloadTooLarge

STREAMED_BODIES = (("POST", "/v1/files"), ("PUT", "/v1/storage/"))
"""(method, path or path prefix ending in /) of the routes that stream their own bodies."""


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_json_body_bytes: int) -> None:
        self.app = app
        self.max_json_body_bytes = max_json_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _unstorable_in_url(scope)
        if refusal is None and _has_body(scope) and not _streams_its_body(scope):
            body, refusal = await self._read_body(scope, receive)
            if body is None and refusal is None:
                return  # the client went away mid-body
            if refusal is None and body:
                refusal = _unstorable_in_json(body)
            receive = _replay(body or b"", receive)
        if refusal is not None:
            # A body left unread cannot be skipped over: the connection closes with the answer.
            closing = {"Connection": "close"} if isinstance(refusal, PayloadTooLarge) else None
            await _answer(refusal, scope, receive, send, headers=closing)
            return
        await self.app(scope, receive, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, AligndError | None]:
        """The whole body, or the 413 for one over the limit (read no further than the limit)."""
        declared = _content_length(scope)
        if declared is not None and declared > self.max_json_body_bytes:
            return None, self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_json_body_bytes:
                return None, self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is over this server's {self.max_json_body_bytes}-byte limit for JSON "
            "requests (ALIGND_MAX_JSON_BODY_BYTES); send less in one request",
            code="request_too_large",
        )


def _has_body(scope: Scope) -> bool:
    """HTTP/1.1 framing: a request without Content-Length or Transfer-Encoding has no body."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _streams_its_body(scope: Scope) -> bool:
    method, path = scope["method"], scope["path"]
    return any(
        method == streamed_method and (path == prefix or (prefix.endswith("/") and path.startswith(prefix)))
        for streamed_method, prefix in STREAMED_BODIES
    )


def _unstorable_in_url(scope: Scope) -> AligndError | None:
    found = storable.problem(scope["path"])
    if found is not None:
        return storable.unstorable(_path_param(scope), found)
    query: bytes = scope["query_string"]
    if b"%00" not in query:  # the only way a query string can carry unstorable text
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        found = storable.problem(name + value)
        if found is not None:
            return storable.unstorable(storable.dotted((name,)), found)
    return None


def _path_param(scope: Scope) -> str:
    """The name of the path parameter that holds the bad text, from the documented path it matches
    (`path` when none does). Only refused requests pay for this."""
    for template in scope["app"].openapi()["paths"]:
        match = compile_path(template)[0].match(scope["path"])
        for name, value in (match.groupdict() if match else {}).items():
            if storable.problem(value) is not None:
                return name
    return "path"


def _unstorable_in_json(body: bytes) -> AligndError | None:
    if not storable.may_hold_unstorable(body):
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON the route could read either: its own validation says what is wrong
    found = storable.find_in_json(parsed)
    return None if found is None else storable.unstorable(found[0] or "body", found[1])


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body read here, then the client's own messages (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _answer(
    error: AligndError, scope: Scope, receive: Receive, send: Send, headers: dict[str, str] | None
) -> None:
    response = envelope(error.status_code, error.message, error.type, error.param, error.code, headers)
    await response(scope, receive, send)
