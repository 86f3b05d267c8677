"""The FastAPI plumbing every area's router shares: the core behind the app, the bearer token
check of every /v2 call, the resource group a request names (``AI-Resource-Group``), the JSON
body, the query, and the error answer's JSON shape."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from labkit.local.aicore.common import DEFAULT_RESOURCE_GROUP, ApiError, bad

if TYPE_CHECKING:
    from labkit.local.aicore.core import LocalAICore


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise bad("the request needs a JSON body", "MissingBody")
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad("the request body is not JSON", "InvalidBody") from None
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object", "InvalidBody")
    return data


def error_response(request: Request, exc: ApiError) -> JSONResponse:
    error: dict[str, Any] = {
        "code": exc.code,
        "message": exc.message,
        "requestId": uuid.uuid4().hex,
        "target": exc.target or request.url.path,
    }
    if exc.details is not None:
        error["details"] = exc.details
    headers = (
        {"WWW-Authenticate": 'Bearer realm="labkit-local-aicore"'} if exc.status == 401 else None
    )
    return JSONResponse({"error": error}, status_code=exc.status, headers=headers)


def created(
    response: Response, core: LocalAICore, collection: str, item: dict[str, Any]
) -> dict[str, Any]:
    """A created ML object's answer: the object, its URL under /v2/lm in the Location header."""
    response.headers["Location"] = f"{core.settings.base_url}/v2/lm/{collection}/{item['id']}"
    return item


def core_of(request: Request) -> LocalAICore:
    return request.app.state.core  # type: ignore[no-any-return]


def auth(request: Request) -> dict[str, Any]:
    """Every /v2 call needs a valid bearer token."""
    return core_of(request).tokens.check(request.headers.get("authorization"))


def group_item(request: Request) -> str:
    """The resource group of a request about one object (404 when it does not exist)."""
    return core_of(request).resource_groups.group(
        request.headers.get("ai-resource-group"), unknown_status=404
    )


def group_list(request: Request) -> str:
    """The resource group of a list or create request (the spec has no 404 there: 400)."""
    return core_of(request).resource_groups.group(
        request.headers.get("ai-resource-group"), unknown_status=400
    )


def group_default(request: Request) -> str:
    """Object store secrets: the header is optional and defaults to 'default'."""
    name = request.headers.get("ai-resource-group") or DEFAULT_RESOURCE_GROUP
    return core_of(request).resource_groups.group(name, unknown_status=404)


def query(request: Request) -> dict[str, str]:
    return dict(request.query_params)


Core = Annotated[Any, Depends(core_of)]  # the LocalAICore
JsonBody = Annotated[dict[str, Any], Depends(json_body)]
GroupItem = Annotated[str, Depends(group_item)]
GroupList = Annotated[str, Depends(group_list)]
GroupDefault = Annotated[str, Depends(group_default)]
Query = Annotated[dict[str, str], Depends(query)]
