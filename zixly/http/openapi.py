"""``GET /openapi.json``: the OpenAPI 3.1 description of Zixly's REST surface.

Written from the models that validate the requests (``zixly.ingest.models``, through
``model_json_schema``) and the models of the answers (``zixly.http.bodies``); limits come
from the settings' defaults, so the document is the same on every deployment and the
committed copy (``docs/openapi.json``, ``python -m zixly.http.openapi --write``) is
compared with it by tests/test_openapi.py: a change to a model shows up in review.
GraphQL has its own contract (``schema.graphql``); here it is one opaque operation.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from zixly import __version__
from zixly.core.settings import Settings
from zixly.http import bodies
from zixly.http.export import ExportQuery
from zixly.ingest import models
from zixly.providers.registry import PROVIDERS

DOCUMENT_FILE = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
SDL_LINK = "schema.graphql"
JSON = "application/json"
NULL = {"type": "null"}
Doc = dict[str, Any]


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def _ref(model: type[BaseModel]) -> Doc:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _schemas() -> Doc:
    listed: list[type[BaseModel]] = [
        *models.REQUEST_MODELS.values(),
        models.IngestResult,
        models.HeartbeatRequest,
        models.HeartbeatResult,
        bodies.ErrorBody,
        bodies.IngestErrorBody,
        bodies.Health,
        bodies.Readiness,
    ]
    _, top = models_json_schema(
        [(model, "validation") for model in listed], ref_template="#/components/schemas/{model}"
    )
    found: Doc = top.get("$defs", {})
    return dict(sorted(found.items()))


def _header(description: str, schema: Doc | None = None, *, required: bool = False) -> Doc:
    return {
        "description": description,
        "required": required,
        "schema": schema or {"type": "string"},
    }


HEADERS: Doc = {
    "X-Request-ID": _header(
        "the request's id (the client's own X-Request-ID when it is 8-64 of [A-Za-z0-9._-])",
        required=True,
    ),
    "Retry-After": _header("seconds after which the same request may succeed", {"type": "integer"}),
    "X-RateLimit-Limit": _header("requests allowed per window", {"type": "integer"}),
    "X-RateLimit-Remaining": _header("requests left in the window", {"type": "integer"}),
    "X-RateLimit-Reset": _header("seconds until the window frees a request", {"type": "integer"}),
    "WWW-Authenticate": _header("the RFC 6750 challenge of a 401", required=True),
    "Location": _header("where the browser goes next", required=True),
    "Set-Cookie": _header("the editor session cookie (HttpOnly, SameSite=Strict)"),
    "Allow": _header("the methods the path takes", required=True),
    "Content-Disposition": _header("attachment; filename=financials_<start>_<end>.csv"),
}


def _headers(*names: str) -> Doc:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-ID", *names)}


LIMITED = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def _answer(description: str, media: str, schema: Doc, *headers: str) -> Doc:
    return {
        "description": description,
        "headers": _headers(*headers),
        "content": {media: {"schema": schema}},
    }


def _errors(body: type[BaseModel], *statuses: int) -> Doc:
    """The error answers of an operation, each with the error body of its format."""
    said = {
        400: ("the request is malformed or a value is invalid", ()),
        401: ("no, a malformed, unknown, revoked or expired credential", ("WWW-Authenticate",)),
        403: ("authenticated, but not allowed (role, tenant, blocked route)", ()),
        404: ("no such resource", ()),
        405: ("the path takes POST only", ("Allow",)),
        413: ("the body is over the size or record limit", ()),
        422: ("the batch was refused as a whole (every bad value listed); nothing was written", ()),
        429: (
            "over a rate limit (per tenant, or failed authentications per address)",
            ("Retry-After", *LIMITED),
        ),
        500: ("unexpected: masked to its request id, logged in full", ()),
        503: ("PostgreSQL or Redis cannot serve now, or no capacity in time", ("Retry-After",)),
    }
    return {
        str(status): _answer(said[status][0], JSON, _ref(body), *said[status][1])
        for status in statuses
    }


def _ingest_operation(kind: str, request: type[models.Envelope], record: type[BaseModel]) -> Doc:
    return {
        "post": {
            "operationId": f"ingest_{kind.replace('-', '_')}",
            "tags": ["ingest"],
            "summary": f"Upsert a batch of {kind} records",
            "description": (
                f"{inspect.cleandoc(record.__doc__ or '')}\n\nValidated all or nothing: a 422 lists every "
                "bad record by index and field and nothing is written. Written idempotently in "
                "one transaction (a replay changes nothing), with lineage (source_system, "
                "workflow_id, execution_id). At most "
                f"{_default('ingest_max_records')} records and "
                f"{_default('ingest_max_body_bytes')} bytes (settings' defaults)."
            ),
            "security": [{"ingestToken": []}],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref(request)}},
            },
            "responses": {
                "200": _answer("written", JSON, _ref(models.IngestResult), *LIMITED),
                **_errors(bodies.IngestErrorBody, 400, 401, 413, 422, 429, 500, 503),
            },
        }
    }


def _query(name: str, description: str, schema: Doc, *, required: bool = False) -> Doc:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _parameters(model: type[BaseModel]) -> list[Doc]:
    """The query parameters of ``model`` (the one that validates them)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema["properties"].items():
        described = {k: v for k, v in field.items() if k not in ("title", "description", "default")}
        # an optional parameter is left out, never null
        options = [option for option in described.pop("anyOf", ()) if option != NULL]
        if options:
            described.update(options[0] if len(options) == 1 else {"anyOf": options})
        parameters.append(
            _query(name, field.get("description", ""), described, required=name in required)
        )
    return parameters


HTML = {"text/html": {"schema": {"type": "string"}}}


def _page(description: str) -> Doc:
    return {"description": description, "headers": _headers(), "content": HTML}


def _paths() -> Doc:
    ingest = {
        f"/ingest/v1/{kind}": _ingest_operation(kind, models.REQUEST_MODELS[kind], record)
        for kind, record in models.RECORD_MODELS.items()
    }
    return {
        **ingest,
        "/ingest/v1/heartbeat": {
            "post": {
                "operationId": "ingest_heartbeat",
                "tags": ["ingest"],
                "summary": "Record that the tenant's n8n instance is alive",
                "security": [{"ingestToken": []}],
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": _ref(models.HeartbeatRequest)}},
                },
                "responses": {
                    "200": _answer("recorded", JSON, _ref(models.HeartbeatResult), *LIMITED),
                    **_errors(bodies.IngestErrorBody, 400, 401, 413, 429, 500, 503),
                },
            }
        },
        "/export/financials.csv": {
            "get": {
                "operationId": "export_financials_csv",
                "tags": ["export"],
                "summary": "The tenant's financials as CSV, streamed",
                "description": (
                    "Needs VIEWER or higher in the tenant. At most "
                    f"{_default('max_range_days')} days. Columns: record_date, client_id, "
                    "client_name, revenue, expenses, net_profit, cash_flow, currency, "
                    "source_system; text a spreadsheet would evaluate starts with '."
                ),
                "security": [{"bearerJWT": []}],
                "parameters": [
                    *_parameters(ExportQuery),
                    {"$ref": "#/components/parameters/tenant"},
                ],
                "responses": {
                    "200": {
                        "description": "the CSV, header row first",
                        "headers": _headers("Content-Disposition", *LIMITED),
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    **_errors(bodies.ErrorBody, 400, 401, 403, 429, 500, 503),
                },
            }
        },
        "/oauth/{provider}/callback": {
            "get": {
                "operationId": "oauth_callback",
                "tags": ["integrations"],
                "summary": "Where a provider returns the browser after consent",
                "description": (
                    "A browser navigation: the single-use state identifies the tenant and user. "
                    "Answers a small page (or, with ZIXLY_OAUTH_RETURN_URL, a 303 there with "
                    "provider, status and reason)."
                ),
                "parameters": [
                    {
                        "name": "provider",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(PROVIDERS)},
                    },
                    _query("state", "the state Zixly sent", {"type": "string"}),
                    _query("code", "the provider's authorization code", {"type": "string"}),
                    _query("error", "the provider's error (access_denied...)", {"type": "string"}),
                    _query("shop", "Shopify's store domain", {"type": "string"}),
                ],
                "responses": {
                    "200": _page("connected"),
                    "303": {
                        "description": "to ZIXLY_OAUTH_RETURN_URL",
                        "headers": _headers("Location"),
                    },
                    "400": _page("not connected: the reason is on the page"),
                    "403": _page("only a tenant ADMIN can connect providers"),
                    "404": _page("no such provider"),
                    "500": _page("Zixly could not complete the connection"),
                    "503": {
                        **_page("Zixly is unavailable for a moment"),
                        "headers": _headers("Retry-After"),
                    },
                },
            }
        },
        "/invitations/accept": {
            "get": {
                "operationId": "invitation_page",
                "tags": ["pages"],
                "summary": "Where an invitation mail's link lands (accepting is acceptInvitation)",
                "parameters": [
                    _query(
                        "token", "the invitation token (stays in the browser)", {"type": "string"}
                    )
                ],
                "responses": {"200": _page("what to do next")},
            }
        },
        "/editor/{slug}/login": {
            "get": {
                "operationId": "editor_login",
                "tags": ["editor"],
                "summary": "Open the tenant's n8n editor (EDITOR or ADMIN of that tenant)",
                "description": (
                    "Sets Zixly's editor cookie and redirects to /editor/<slug>/; every other "
                    "path under /editor/<slug>/ is n8n's editor, proxied with that cookie "
                    "(docs/n8n-editor-access.md)."
                ),
                "security": [{"bearerJWT": []}, {"tokenQuery": []}],
                "parameters": [
                    {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "303": {
                        "description": "to the editor",
                        "headers": _headers("Location", "Set-Cookie"),
                    },
                    **_errors(bodies.ErrorBody, 401, 403, 404, 503),
                },
            }
        },
        "/graphql": {
            "post": {
                "operationId": "graphql",
                "tags": ["graphql"],
                "summary": "The GraphQL API",
                "description": (
                    f"Its contract is the SDL: {SDL_LINK} in the repository (`zixly schema` "
                    "prints it). It is not served: introspection is off in production."
                ),
                "security": [{"bearerJWT": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["query"],
                                "properties": {
                                    "query": {"type": "string"},
                                    "variables": {"type": ["object", "null"]},
                                    "operationName": {"type": ["string", "null"]},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "a GraphQL response (data and/or errors)",
                        "headers": _headers(*LIMITED),
                        "content": {
                            JSON: {"schema": {"type": "object"}},
                            "application/graphql-response+json": {"schema": {"type": "object"}},
                        },
                    },
                    "default": {
                        "description": "a GraphQL error response (errors[].extensions.code)",
                        "content": {
                            JSON: {"schema": {"type": "object"}},
                            "application/graphql-response+json": {"schema": {"type": "object"}},
                        },
                    },
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Liveness: the process answers",
                "responses": {"200": _answer("alive", JSON, _ref(bodies.Health))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: PostgreSQL and Redis answer within 2 s",
                "responses": {
                    "200": _answer("ready", JSON, _ref(bodies.Readiness)),
                    "503": _answer("not ready", JSON, _ref(bodies.Readiness), "Retry-After"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus exposition (bearer ZIXLY_METRICS_TOKEN; open in development)",
                "security": [{"metricsToken": []}, {}],
                "responses": {
                    "200": {
                        "description": "the metrics",
                        "headers": _headers(),
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(bodies.ErrorBody, 401, 404),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                "summary": "This document",
                "responses": {"200": _answer("OpenAPI 3.1", JSON, {"type": "object"})},
            }
        },
    }


def build_document() -> Doc:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Zixly REST API",
            "version": __version__,
            "description": (
                "Zixly's REST surface: bulk ingest from tenants' n8n, CSV export, the OAuth "
                "callback, the editor entry, the invitation page and health. The GraphQL API "
                "is described by its SDL. Every answer carries X-Request-ID. See "
                "docs/rest-api.md."
            ),
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [
            {"name": t}
            for t in (
                "ingest",
                "export",
                "integrations",
                "editor",
                "pages",
                "graphql",
                "operations",
            )
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "headers": HEADERS,
            "parameters": {
                "tenant": {
                    "name": "X-Zixly-Tenant",
                    "in": "header",
                    "required": False,
                    "description": "the tenant (id or slug) of a user in several",
                    "schema": {"type": "string"},
                }
            },
            "securitySchemes": {
                "bearerJWT": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a user's token (Zixly's HS256 key or the configured JWKS); "
                    "membership and role are read from the database on every request",
                },
                "ingestToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "zik_ and 43 characters",
                    "description": "a tenant's ingest token (ingestTokens, rotateIngestToken)",
                },
                "tokenQuery": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "the user's JWT in the query (a browser navigation)",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ZIXLY_METRICS_TOKEN",
                },
            },
        },
    }


def render() -> str:
    return json.dumps(build_document(), indent=2) + "\n"


@functools.cache
def _rendered() -> bytes:
    return render().encode()


async def openapi_json(_request: Request) -> Response:
    return Response(_rendered(), media_type=JSON)


def main(argv: list[str]) -> int:
    """``python -m zixly.http.openapi [--write]``: print the document, or update the copy."""
    if argv[1:] == ["--write"]:
        DOCUMENT_FILE.write_text(render())
        print(f"wrote {DOCUMENT_FILE}")
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
