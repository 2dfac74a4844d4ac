"""The AsyncAPI 3.0 document describing the wire protocol (served at ``/asyncapi.json``)."""

from __future__ import annotations

from typing import Any

from .errors import STATUS

__all__ = ["CLOUDEVENT_SCHEMA", "POSITION_SCHEMA", "asyncapi_document"]

_POSITION = {"type": "string", "pattern": "^.+-[0-9]{1,19}$", "description": "<epoch>-<offset>"}
POSITION_SCHEMA = _POSITION

_B64 = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"  # noqa: E501
_CLOUDEVENT: dict[str, Any] = {
    "type": "object",
    "description": "A CloudEvents 1.0 event in JSON form; `sequence` is its position; "
    "an optional attribute that is null is absent. "
    "Binary data is `data_base64` instead of `data`; extension attributes are named with "
    "at most 20 lowercase letters and digits, at least one a letter.",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "const": "1.0"},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "subject": {"type": ["string", "null"]},
        "time": {"type": ["string", "null"], "format": "date-time", "pattern": _RFC3339},
        "datacontenttype": {"type": ["string", "null"]},
        "sequence": {
            "type": ["string", "null"],
            "description": "its position, <epoch>-<offset> (set by the broker, ignored on ingest)",
        },
        "data": {},
        "data_base64": {
            "type": ["string", "null"],
            "contentEncoding": "base64",
            "pattern": _B64,
        },
    },
    "patternProperties": {"^(?=[a-z0-9]{1,20}$)[0-9]*[a-z][a-z0-9]*$": {}},
    "additionalProperties": False,
    "not": {"required": ["data", "data_base64"]},
}
CLOUDEVENT_SCHEMA = _CLOUDEVENT


def _op(name: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["op", *required],
        "properties": {"op": {"type": "string", "const": name}, **props},
    }


_REF = {"type": "string", "description": "echoed in the answer"}
_SCHEMAS: dict[str, Any] = {
    "CloudEvent": _CLOUDEVENT,
    "EventBatch": {"type": "array", "items": {"$ref": "#/components/schemas/CloudEvent"}},
    "Subscribe": _op(
        "subscribe",
        {
            "id": {"type": "string"},
            "pattern": {"type": "string", "description": "subject pattern, `*` and `>`"},
            "since": _POSITION,
            "filter": {
                "type": "object",
                "description": "attribute (type, source, subject, id) or data.<key> -> value",
            },
            "overflow": {
                "type": "string",
                "enum": ["disconnect", "drop_oldest", "latest_only"],
                "description": "slow-client policy asked for; must be in the server's allow-list",
            },
        },
        ["id", "pattern"],
    ),
    "Unsubscribe": _op("unsubscribe", {"id": {"type": "string"}}, ["id"]),
    "Publish": _op(
        "publish",
        {
            "ref": _REF,
            "subject": {"type": "string"},
            "type": {"type": "string"},
            "data": {},
            "event": {"$ref": "#/components/schemas/CloudEvent"},
        },
        ["subject"],
    ),
    "Auth": _op("auth", {"ref": _REF, "token": {"type": "string"}}, ["token"]),
    "Subscribed": _op("subscribed", {"id": {"type": "string"}}, ["id"]),
    "Unsubscribed": _op(
        "unsubscribed",
        {
            "id": {"type": "string"},
            "reason": {"type": "string", "description": "forbidden: a new token's claims"},
        },
        ["id"],
    ),
    "Authed": _op(
        "authed",
        {"ref": _REF, "exp": {"type": ["number", "null"], "description": "the new expiry"}},
        ["exp"],
    ),
    "Ack": _op("ack", {"ref": _REF, "position": _POSITION}, ["position"]),
    "Gap": _op(
        "gap",
        {
            "id": {"type": "string"},
            "requested": _POSITION,
            "earliest": {"type": ["string", "null"]},
            "reason": {"type": "string"},
        },
        ["requested", "earliest"],
    ),
    "Error": _op(
        "error",
        {
            "code": {"type": "string", "enum": sorted(STATUS)},
            "message": {"type": "string"},
            "ref": _REF,
        },
        ["code", "message"],
    ),
}


def _message(name: str, schema: str, summary: str, content_type: str | None = None) -> Any:
    msg: dict[str, Any] = {
        "name": name,
        "summary": summary,
        "payload": {"$ref": f"#/components/schemas/{schema}"},
    }
    if content_type:
        msg["contentType"] = content_type
    return msg


_MESSAGES: dict[str, Any] = {
    "event": _message("event", "CloudEvent", "One event"),
    "eventBatch": _message("eventBatch", "EventBatch", "Events coalesced into one frame"),
    "subscribe": _message("subscribe", "Subscribe", "Subscribe to a pattern"),
    "unsubscribe": _message("unsubscribe", "Unsubscribe", "End a subscription"),
    "publish": _message("publish", "Publish", "Publish one event"),
    "auth": _message("auth", "Auth", "A fresh token for this connection"),
    "authed": _message("authed", "Authed", "The fresh token is in use"),
    "subscribed": _message("subscribed", "Subscribed", "Subscription confirmed"),
    "unsubscribed": _message("unsubscribed", "Unsubscribed", "Unsubscription confirmed"),
    "ack": _message("ack", "Ack", "Publish acknowledged with its position"),
    "gap": _message("gap", "Gap", "Resume position older than history; continues at earliest"),
    "error": _message("error", "Error", "A documented error code"),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{name}"}


def asyncapi_document(
    host: str, prefix: str = "", title: str = "rxstreams", auth: bool = False
) -> dict[str, Any]:
    """The AsyncAPI 3.0 description of one app mounted at ``prefix`` on ``host``.

    >>> doc = asyncapi_document("localhost:8080", "/live")
    >>> doc["asyncapi"], doc["channels"]["ws"]["address"]
    ('3.0.0', '/live/ws')
    """
    security = [{"$ref": "#/components/securitySchemes/jwt"}] if auth else []
    server: dict[str, Any] = {
        "host": host,
        "protocol": "ws",
        "description": "WebSocket, SSE, NDJSON and long-poll on one HTTP port",
    }
    if prefix:
        server["pathname"] = prefix
    if security:
        server["security"] = security
    stream_params = {"pattern": {"description": "Subject pattern (NATS-style `*` and `>`)."}}
    channels: dict[str, Any] = {
        "ws": {
            "address": f"{prefix}/ws",
            "title": "WebSocket",
            "messages": {k: _ref(k) for k in _MESSAGES},
        },
        "events": {
            "address": f"{prefix}/events/{{pattern}}",
            "title": "Server-Sent Events or NDJSON stream",
            "description": "Query: last_event_id (resume), overflow (slow-client policy, "
            "if the server allows clients to choose), token (JWT).",
            "parameters": stream_params,
            "messages": {"event": _ref("event"), "gap": _ref("gap")},
        },
        "poll": {
            "address": f"{prefix}/poll/{{pattern}}",
            "title": "Long-poll answering a CloudEvents batch",
            "parameters": stream_params,
            "messages": {"eventBatch": _ref("eventBatch")},
        },
        "ingest": {
            "address": f"{prefix}/events/{{subject}}",
            "title": "Ingest: one event, a JSON array or NDJSON",
            "parameters": {"subject": {"description": "Concrete subject (no wildcards)."}},
            "messages": {"event": _ref("event"), "eventBatch": _ref("eventBatch")},
        },
    }

    def op(action: str, channel: str, messages: list[str], summary: str) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages],
        }

    operations = {
        "wsSend": op(
            "receive", "ws", ["subscribe", "unsubscribe", "publish", "auth"], "Client to server ops"
        ),
        "wsReceive": op(
            "send",
            "ws",
            ["event", "eventBatch", "subscribed", "unsubscribed", "ack", "authed", "gap", "error"],
            "Server to client: events (coalesced) and control messages",
        ),
        "streamEvents": op("send", "events", ["event", "gap"], "SSE/NDJSON stream"),
        "pollEvents": op("send", "poll", ["eventBatch"], "Long-poll answer"),
        "ingestEvents": op("receive", "ingest", ["event", "eventBatch"], "HTTP POST ingest"),
    }
    components: dict[str, Any] = {"schemas": _SCHEMAS, "messages": _MESSAGES}
    if auth:
        components["securitySchemes"] = {
            "jwt": {
                "type": "httpApiKey",
                "name": "Authorization",
                "in": "header",
                "description": "Bearer JWT (or ?token=) with subscribe/publish pattern claims",
            }
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": "1.0.0",
            "description": "rxstreams wire protocol v1: CloudEvents over SSE, NDJSON, "
            "long-poll and WebSocket.",
        },
        "servers": {"default": server},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": components,
    }
