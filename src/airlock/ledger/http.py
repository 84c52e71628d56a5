"""POST /v1/ledger/items: line items from the services a task used, authenticated with the same bearer
keys as the model API (the key names the tenant). One item or {"items": [...]} (up to 1000, stored all
or nothing). 201 with each item's fate (created, or already accepted: a retry); 409 when an id was
accepted before with another body; 400/401/413/422 as problem+json."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from airlock.errors import (
    BadRequest,
    Conflict,
    ItemConflict,
    MethodNotAllowed,
    PayloadTooLarge,
    Unprocessable,
)
from airlock.gateway.state import GatewayState
from airlock.ledger.items import ItemsIn, LedgerItems, LineItemIn

ITEMS_PATH = "/v1/ledger/items"


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, or the problem that says why not."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over the limit of {limit}", limit=limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes", limit=limit) from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    return doc


def validation_problem(e: ValidationError) -> Unprocessable:
    errors = [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
        for err in e.errors(include_url=False)
    ]
    return Unprocessable(
        f"{len(errors)} field(s) did not validate: " + "; ".join(f"{x['field']}: {x['message']}" for x in errors[:5]),
        errors=errors[:50],
    )


class LedgerEndpoint:
    """The handler and its store. SQLite writes run on one thread of their own, never on the event loop."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-items")
        self.items: LedgerItems | None = None

    def _add(self, tenant: str, items: list[LineItemIn]) -> list[Any]:
        if self.items is None:
            stores = self.state.stores
            self.items = LedgerItems(stores.open_ledger_items(), stores.owners)
        return self.items.add(tenant, items)

    async def post(self, request: web.Request) -> web.Response:
        tenant = self.state.auth.tenant_for(request.headers.get("Authorization"))
        doc = await read_json_object(request, self.state.config.server.max_body_bytes)
        try:
            items = list(ItemsIn.model_validate(doc).items) if "items" in doc else [LineItemIn.model_validate(doc)]
        except ValidationError as e:
            raise validation_problem(e) from None
        ids = [i.id for i in items]
        if len(set(ids)) != len(ids):
            raise Unprocessable("an item id is given twice in one request")
        try:
            accepted = await asyncio.get_running_loop().run_in_executor(self.pool, self._add, tenant, items)
        except ItemConflict as e:
            raise Conflict(
                f"item {e.item_id!r} was accepted before with a different body; nothing was stored",
                item_id=e.item_id,
            ) from None
        body = {
            "tenant": tenant,
            "accepted": len(accepted),
            "items": [{"id": a.id, "status": "created" if a.created else "duplicate"} for a in accepted],
        }
        status = 201 if any(a.created for a in accepted) else 200
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    async def close(self, app: web.Application) -> None:
        self.pool.shutdown(wait=True)
        if self.items is not None:
            self.items.close()


async def not_allowed(request: web.Request) -> web.Response:
    raise MethodNotAllowed(f"{request.method} is not allowed on {request.path}; POST items there")


def add_ledger_routes(app: web.Application, state: GatewayState) -> None:
    endpoint = LedgerEndpoint(state)
    app.router.add_post(ITEMS_PATH, endpoint.post)
    app.router.add_route("*", ITEMS_PATH, not_allowed)
    app.on_cleanup.append(endpoint.close)
