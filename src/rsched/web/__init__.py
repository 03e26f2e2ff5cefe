"""Web pages for coordinators, residents and faculty, served by the API app.

Server-rendered HTML (Jinja2 templates in ``templates/``), a little vanilla JavaScript
and CSS in ``static/`` (served by the app itself: no external requests, no build step).
Pages call the same service functions as the API routes. See docs/web.md.

``router`` holds plain Starlette routes (not API operations: they are not in the OpenAPI
document and take cookie sessions, not bearer tokens); ``rsched.api.app`` includes it.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import Route

from rsched.web import core, ops, pages, publish, runs, swaps

router = APIRouter()
for _route in (*pages.ROUTES, *runs.ROUTES, *publish.ROUTES, *swaps.ROUTES, *ops.ROUTES):
    router.routes.append(_route)
router.routes.append(
    Route("/static/{name:path}", core.static_file, methods=["GET"], include_in_schema=False)
)

__all__ = ["router"]
