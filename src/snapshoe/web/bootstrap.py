"""Build the web tier: ``create_app(settings=None)`` is the uvicorn factory. The API client and
Redis (sessions) are built in the lifespan, never at import time. docs/web.md."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.redis import create_redis
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.web import accounts, api_reference, console, drops, store
from snapshoe.web.deps import Deps
from snapshoe.web.i18n import error_words
from snapshoe.web.pages import NeedSignIn, Page, PageProblem, local_path
from snapshoe.web.security import SecurityHeaders
from snapshoe.web.sessions import SessionStore
from snapshoe.web.settings import WebSettings
from snapshoe.web.views import install_filters

HERE = Path(__file__).parent


async def _page_of(request: Request) -> Page:
    page = getattr(request.state, "page", None)
    return page if isinstance(page, Page) else await Page.open(request)


async def need_sign_in(request: Request, _: Exception) -> Response:
    page = await _page_of(request)
    query = f"?{request.url.query}" if request.url.query else ""
    page.session.next_path = local_path(request.url.path + query)
    page.flash("need_login")
    return await page.redirect("/login")


async def http_error(request: Request, exc: Exception) -> Response:
    """An unknown page or a wrong method: the store's error page in the buyer's words (the
    services' problem+json is for API clients; these are people)."""
    assert isinstance(exc, StarletteHTTPException)
    code = "not_found" if exc.status_code == 404 else "validation_error"
    return await page_problem(request, PageProblem(exc.status_code, code))


async def page_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageProblem)
    page = await _page_of(request)
    message = error_words(page.session.lang, exc.code)
    return await page.render(
        "error.html", status=exc.status, message=message, code=exc.code, back=exc.back
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    web = settings_for(WebSettings, settings)
    templates = Jinja2Templates(directory=HERE / "templates")
    install_filters(templates.env)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from snapshoe.web.upstream import Api

        redis = create_redis(web)
        api = Api(web)
        await api.start()
        sessions = SessionStore(redis, web.namespace, web.web_session_ttl_seconds)
        app.state.deps = Deps(web, redis, api, sessions, templates)
        try:
            yield
        finally:
            await api.close()
            await redis.aclose()

    async def check_redis() -> None:
        await app.state.deps.redis.ping()

    app = create_service_app(
        "web",
        settings=web,
        routers=[api_reference.router, accounts.router, store.router, drops.router, console.router],
        readiness={"redis": check_redis},
        lifespan=lifespan,
        title="SnapShoe store and console",
    )
    app.state.settings = web
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(NeedSignIn, need_sign_in)
    app.add_exception_handler(PageProblem, page_problem)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(SecurityHeaders, hsts=web.cookie_secure)
    return app
