"""The OpenAPI 3.1 document of the HTTP endpoints (served at ``/openapi.json``).

The WebSocket protocol and the streams' messages are in the AsyncAPI document
(``/asyncapi.json``); this one describes every HTTP request and answer, errors included,
with the limits of the running configuration (the long-poll ``timeout`` maximum, the body
size), so a client generator or a fuzzer (``tests/server/test_fuzz_http.py`` runs
Schemathesis from it) knows exactly what is accepted.
"""

from __future__ import annotations

from typing import Any

from .asyncapi import CLOUDEVENT_SCHEMA, POSITION_SCHEMA
from .config import ServerConfig
from .errors import STATUS

__all__ = ["openapi_document"]

_JSON = "application/json"
_BATCH = "application/cloudevents-batch+json"


def _schema(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _schema("Error")}}}


def _retry_after(description: str) -> dict[str, Any]:
    out = _error(description)
    out["headers"] = {
        "Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}, "required": True}
    }
    return out


_ERRORS: dict[str, Any] = {
    "400": _error("bad_json, bad_event, bad_subject, bad_position or bad_request"),
    "401": _error("unauthorized: token missing, expired or invalid"),
    "403": _error("forbidden: the token does not allow this subject or pattern"),
    "404": _error("not_found (a path parameter containing '/' does not route)"),
    "405": _error("method_not_allowed"),
    "503": _retry_after("overloaded (connection limit, shutting down) or unavailable"),
}


def _responses(ok: dict[str, Any], *codes: str) -> dict[str, Any]:
    out = dict(ok)
    for code in ("400", "404", "405", "503", *codes):
        out[code] = {"$ref": f"#/components/responses/E{code}"}
    return out


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_TOK = r"[A-Za-z0-9_\-:@~=+]+"
SUBJECT_REGEX = rf"^{_TOK}(\.{_TOK})*$"
PATTERN_REGEX = rf"^(({_TOK}|\*)\.)*({_TOK}|\*|>)$"


def _path(name: str, description: str, regex: str) -> dict[str, Any]:
    """A subject (``regex=SUBJECT_REGEX``) or pattern path parameter.

    >>> import re
    >>> [bool(re.match(PATTERN_REGEX, p)) for p in ("chat.*.msg", "a.>", ">.a", "a..b")]
    [True, True, False, False]
    >>> [bool(re.match(SUBJECT_REGEX, p)) for p in ("chat.lobby", "chat.*", "a b")]
    [True, False, False]
    """
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": regex},
        "description": description,
    }


_TOKEN = _query("token", {"type": "string"}, "JWT, when the client cannot send a header")


def openapi_document(
    host: str, prefix: str = "", config: ServerConfig | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 description of one app mounted at ``prefix`` on ``host``.

    >>> doc = openapi_document("localhost:8080", "/live")
    >>> doc["openapi"], doc["servers"][0]["url"], sorted(doc["paths"])[:2]
    ('3.1.0', 'http://localhost:8080/live', ['/asyncapi.json', '/events/{pattern}'])
    """
    cfg = config or ServerConfig()
    pattern = _path(
        "pattern", "Subject pattern: dot-separated tokens, `*` one, `>` the rest", PATTERN_REGEX
    )
    # empty is the same as absent
    position = {**POSITION_SCHEMA, "pattern": "^(.+-[0-9]{1,19})?$"}
    secured = cfg.auth is not None
    stream = {
        "summary": "Server-Sent Events (default) or NDJSON of a pattern",
        "operationId": "streamEvents",
        "parameters": [
            pattern,
            _query("last_event_id", position, "Resume after this position"),
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": position},
            _query(
                "overflow",
                {"type": "string", "enum": ["disconnect", "drop_oldest", "latest_only"]},
                "Slow-client policy, if the server allows clients to choose it",
            ),
            _TOKEN,
        ],
        "responses": _responses(
            {
                "200": {
                    "description": "The stream, until the client leaves, the token expires "
                    "or the server shuts down",
                    "content": {
                        "text/event-stream": {"schema": {"type": "string"}},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                }
            },
            "401",
            "403",
        ),
    }
    poll = {
        "summary": "Long-poll: the events after a position, as a CloudEvents batch",
        "operationId": "pollEvents",
        "parameters": [
            pattern,
            _query("after", position, "The last position the client has; absent: live"),
            _query(
                "timeout",
                {"type": "number", "minimum": 0, "maximum": cfg.poll_max_timeout},
                f"Seconds to wait for an event (default {cfg.poll_timeout:g})",
            ),
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 10_000},
                f"At most this many events (default {cfg.poll_limit})",
            ),
            _TOKEN,
        ],
        "responses": _responses(
            {
                "200": {
                    "description": "The events (empty after the timeout)",
                    "headers": {
                        "X-Last-Event-ID": {"schema": {"type": "string"}, "required": False}
                    },
                    "content": {_BATCH: {"schema": _schema("EventBatch")}},
                },
                "204": {"description": "The client left before the answer"},
                "410": _error("gap: `after` is older than retained history; names earliest"),
            },
            "401",
            "403",
        ),
    }
    ingest = {
        "summary": "Publish one event, a JSON array, NDJSON, or a CloudEvent (either mode)",
        "operationId": "ingestEvents",
        "parameters": [
            _path("pattern", "A concrete subject (no wildcards)", SUBJECT_REGEX),
            _query(
                "type",
                {"type": "string", "minLength": 1, "maxLength": 256},
                "The type of events made from plain JSON values",
            ),
            _TOKEN,
        ],
        "requestBody": {
            "required": True,
            "description": "All or nothing. A CloudEvent in binary mode has its attributes "
            "in ce-* headers and its data as the body, of any content type. At most "
            f"{cfg.max_body_bytes} bytes.",
            "content": {
                _JSON: {"schema": _schema("IngestJson")},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "application/cloudevents+json": {"schema": _schema("CloudEvent")},
                _BATCH: {"schema": _schema("IngestBatch")},
            },
        },
        "responses": _responses(
            {
                "202": {
                    "description": "Stored; the positions in order",
                    "content": {_JSON: {"schema": _schema("Positions")}},
                },
                "408": _error("request_timeout: the body was not received in time"),
                "413": _error("too_large: body, or a batch larger than the publish burst"),
                "415": _error("unsupported_media_type"),
                "429": _retry_after("rate_limited"),
            },
            "401",
            "403",
        ),
    }

    def document(summary: str, op_id: str, ctype: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "operationId": op_id,
                "responses": _responses(
                    {"200": {"description": summary, "content": {ctype: {"schema": {}}}}}
                ),
            }
        }

    paths: dict[str, Any] = {
        "/events/{pattern}": {"get": stream},
        "/events/{subject}": {"post": ingest},
        "/poll/{pattern}": {"get": poll},
        "/ws": {
            "get": {
                "summary": "WebSocket (see /asyncapi.json for its messages)",
                "operationId": "websocket",
                "parameters": [_TOKEN],
                "responses": _responses(
                    {"101": {"description": "Switching protocols"}}, "401", "403"
                ),
            }
        },
        "/healthz": {
            "get": {
                "summary": "Health: the server's and the broker's state",
                "operationId": "healthz",
                "responses": _responses(
                    {
                        "200": {
                            "description": "ok",
                            "content": {_JSON: {"schema": _schema("Health")}},
                        }
                    }
                ),
            }
        },
        "/metrics": document("Prometheus metrics", "metrics", "text/plain"),
        "/asyncapi.json": document("The AsyncAPI 3.0 document", "asyncapi", _JSON),
        "/openapi.json": document("This document", "openapi", _JSON),
    }
    # a 503 from /healthz is the Health object, not an error object
    paths["/healthz"]["get"]["responses"]["503"] = {
        "description": "shutting_down or broker_unavailable",
        "content": {_JSON: {"schema": _schema("Health")}},
    }
    if secured:
        for path in ("/events/{pattern}", "/poll/{pattern}", "/ws"):
            paths[path]["get"]["security"] = [{"bearer": []}, {"token": []}]
        paths["/events/{subject}"]["post"]["security"] = [{"bearer": []}, {"token": []}]
    # "/events/{pattern}" and "/events/{subject}" are one path template to OpenAPI
    paths["/events/{pattern}"]["post"] = paths.pop("/events/{subject}")["post"]
    schemas: dict[str, Any] = {
        "Position": POSITION_SCHEMA,
        "CloudEvent": CLOUDEVENT_SCHEMA,
        "EventBatch": {"type": "array", "items": _schema("CloudEvent")},
        "IngestBatch": {"type": "array", "minItems": 1, "items": _schema("CloudEvent")},
        "IngestJson": {
            "description": "A JSON value (the data of one new event), a CloudEvent (an "
            "object with specversion), or a non-empty array of those; nested at most 253 "
            "levels",
            "anyOf": [
                _schema("CloudEvent"),
                {"type": ["null", "boolean", "number", "string"]},
                {"type": "object", "not": {"required": ["specversion"]}},
                {"type": "array", "minItems": 1, "items": _schema("IngestItem")},
            ],
        },
        "IngestItem": {
            "anyOf": [
                _schema("CloudEvent"),
                {"type": ["null", "boolean", "number", "string", "array"]},
                {"type": "object", "not": {"required": ["specversion"]}},
            ]
        },
        "Positions": {
            "type": "object",
            "required": ["positions"],
            "properties": {"positions": {"type": "array", "items": _schema("Position")}},
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "enum": sorted(STATUS)},
                        "message": {"type": "string"},
                        "field": {"type": ["string", "null"]},
                        "retry_after": {"type": "number"},
                    },
                }
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {
                    "type": "string",
                    "enum": ["ok", "shutting_down", "broker_unavailable"],
                },
                "connections": {"type": "integer"},
                "broker": {"type": "string"},
                "epoch": {"type": ["string", "null"]},
                "broker_state": {"type": "object"},
            },
        },
    }
    components: dict[str, Any] = {
        "schemas": schemas,
        "responses": {f"E{code}": body for code, body in _ERRORS.items()},
    }
    if secured:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "token": {"type": "apiKey", "in": "query", "name": "token"},
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": cfg.title,
            "version": "1.0.0",
            "description": "rxstreams wire protocol v1 over HTTP (docs/PROTOCOL.md); the "
            "WebSocket messages are in /asyncapi.json.",
        },
        "servers": [{"url": f"http://{host}{prefix}"}],
        "paths": paths,
        "components": components,
    }
