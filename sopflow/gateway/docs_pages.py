"""/docs (Swagger UI) and /redoc (ReDoc) from assets vendored in the package (static/docs/,
see its README): FastAPI's own pages load them from a CDN and stay blank offline. The pages and
the schema are outside /api/, so they load without the bearer token; the schema declares the
token (`bearer`) on the /api/ operations, so Swagger UI's "Authorize" sends it with "Try it out".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from sopflow.gateway.guards import PROTECTED

ASSETS = Path(__file__).with_name("static") / "docs"
ASSETS_URL = "/docs/assets"
REDOC_JS = "redoc.standalone.js"
# ReDoc's sidebar shows Redocly's logo from their CDN, with no option to turn it off: the page
# would reach the internet. Served with an empty image in its place (the file stays as vendored).
REDOC_LOGO = b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'
NO_LOGO = b"src:\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E\""


def redoc_script() -> bytes:
    """The vendored ReDoc bundle with its one CDN image replaced (an update that moves it fails
    here, and tests/browser/ fails on any request leaving 127.0.0.1)."""
    script = (ASSETS / REDOC_JS).read_bytes()
    if script.count(REDOC_LOGO) != 1:
        raise RuntimeError(f"{REDOC_JS}: Redocly's logo URL is not there once: check the update")
    return script.replace(REDOC_LOGO, NO_LOGO)


SCHEME = "bearer"
UNAUTHORISED = {"description": "missing or wrong bearer token"}


def add_docs_pages(app: FastAPI) -> None:
    """Serve the two pages and their assets; `app` must be made with docs_url=None and
    redoc_url=None (FastAPI's CDN pages)."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's CDN pages are on"
    redoc_js = redoc_script()

    @app.get(f"{ASSETS_URL}/{REDOC_JS}", include_in_schema=False)
    async def redoc_bundle() -> Response:  # before the mount, which would serve the file as is
        return Response(redoc_js, media_type="text/javascript")

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    title = app.title
    favicon = f"{ASSETS_URL}/favicon-32x32.png"
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=favicon,
            # validatorUrl: no badge that asks swagger.io to validate the schema
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} API",
            redoc_js_url=f"{ASSETS_URL}/{REDOC_JS}",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "SOPFLOW_API_TOKEN (`.sopflow/api_token` under `sopflow up`)",
                }
            }
            for path, operations in schema["paths"].items():
                if path.startswith(PROTECTED):
                    for operation in operations.values():
                        operation["security"] = [{SCHEME: []}]
                        operation["responses"].setdefault("401", UNAUTHORISED)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
