"""One page request: its session, its calls to the API on the buyer's behalf (refreshing the
access token when it is due), CSRF checks and the answer (a rendered page or a redirect, with
the session cookie). Page modules (store.py, accounts.py, drops.py, console.py) use only this."""

from __future__ import annotations

import hmac
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from snapshoe.kernel.clock import utcnow
from snapshoe.web.deps import Deps
from snapshoe.web.i18n import error_words, pick_lang, translator
from snapshoe.web.sessions import COOKIE, LANG_COOKIE, Session
from snapshoe.web.upstream import Answer


class PageProblem(Exception):
    """A page cannot go on: shown as the error page in the buyer's words, with the status."""

    def __init__(self, status: int, code: str, back: str | None = None) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.back = back


class NeedSignIn(Exception):
    """The page needs a signed-in buyer: to the login page, coming back here after."""


def local_path(value: str | None, default: str = "/") -> str:
    """A path on this site only (an open redirect through ?next= is refused)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


class Page:
    def __init__(self, request: Request, deps: Deps, session: Session, old_id: str | None):
        self.request = request
        self.deps = deps
        self.session = session
        self._old_id = old_id
        self.t = translator(session.lang)

    @classmethod
    async def open(cls, request: Request) -> Page:
        deps: Deps = request.app.state.deps
        sid = request.cookies.get(COOKIE)
        lang = pick_lang(request.cookies.get(LANG_COOKIE))
        session = await deps.sessions.load(sid, lang)
        session.lang = lang
        page = cls(request, deps, session, sid)
        request.state.page = page  # the error handlers (bootstrap) answer with it
        return page

    @property
    def client_ip(self) -> str | None:
        # The gateway's forwardfor: the last address is the one HAProxy saw (or was told by
        # its own edge rule); anything before it came from the client and is not believed.
        forwarded = self.request.headers.get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip()
        return last or (self.request.client.host if self.request.client else None)

    def origin(self) -> str:
        return str(self.request.base_url).rstrip("/")

    # The API on the buyer's behalf

    async def token(self) -> str | None:
        s = self.session
        if not s.signed_in:
            return None
        if s.access_token and s.access_expires_at > time.time():
            return s.access_token
        r = await self.deps.api.call(
            "POST",
            "/api/auth/refresh",
            json={"refresh_token": s.refresh_token},
            client_ip=self.client_ip,
        )
        if r.status == 200:
            s.set_tokens(r.body)
            return s.access_token
        if r.status in (400, 401):
            s.sign_out()  # spent or revoked elsewhere: signed out here too
        return None

    async def refresh_user(self) -> None:
        """After the email is verified the token must say so: a new pair and the profile."""
        self.session.access_expires_at = 0
        me = await self.call("GET", "/api/users/me")
        if me.ok:
            self.session.user = me.body
            self.session.dirty = True

    async def call(self, method: str, path: str, **kw: Any) -> Answer:
        token = await self.token()
        return await self.deps.api.call(method, path, token=token, client_ip=self.client_ip, **kw)

    async def need(self, method: str, path: str, **kw: Any) -> Any:
        """An answer that must be a success; otherwise the error page says why."""
        r = await self.call(method, path, **kw)
        if r.status == 401:
            raise NeedSignIn()
        if not r.ok:
            raise PageProblem(r.status or 503, r.code)
        return r.body

    def require_sign_in(self) -> None:
        if not self.session.signed_in:
            raise NeedSignIn()

    def require_admin(self) -> None:
        self.require_sign_in()
        if not self.session.is_admin:
            raise PageProblem(403, "forbidden")

    # Forms

    async def form(self) -> dict[str, str]:
        """The posted form, once its CSRF token and origin are checked."""
        data = {k: str(v) for k, v in (await self.request.form()).items()}
        given = data.pop("csrf_token", "")
        if not hmac.compare_digest(given.encode(), self.session.csrf.encode()):
            raise PageProblem(403, "csrf")
        origin = self.request.headers.get("origin")
        if origin and origin not in ("null", self.origin()):
            raise PageProblem(403, "csrf")
        return data

    def flash(self, key: str) -> None:
        self.session.flash.append(key)
        self.session.dirty = True

    def words(self, answer: Answer) -> str:
        return error_words(self.session.lang, answer.code)

    # Answers

    async def render(self, template: str, status: int = 200, **ctx: Any) -> Response:
        flashes = [self.t(k) for k in self.session.flash]
        if self.session.flash:
            self.session.flash = []
            self.session.dirty = True
        response = self.deps.templates.TemplateResponse(
            self.request,
            template,
            {
                "t": self.t,
                "lang": self.session.lang,
                "session": self.session,
                "csrf": self.session.csrf,
                "flashes": flashes,
                "path": self.request.url.path,
                "now": utcnow(),
                "intent": uuid.uuid4().hex,
                **ctx,
            },
            status_code=status,
        )
        return await self.finish(response)

    async def redirect(self, path: str) -> Response:
        return await self.finish(RedirectResponse(path, status_code=303))

    async def finish(self, response: Response) -> Response:
        """The session saved (if it changed) and its cookie on the answer."""
        if self.session.dirty:
            await self.deps.sessions.save(self.session, self._old_id)
            self._old_id = self.session.id
        response.set_cookie(
            COOKIE,
            self.session.id,
            max_age=self.deps.settings.web_session_ttl_seconds,
            httponly=True,
            secure=self.deps.settings.cookie_secure,
            samesite="lax",
            path="/",
        )
        response.headers["Cache-Control"] = "no-store"
        return response
