"""The payment window's HTML (``templates/``): Jinja2 with autoescape, one inline stylesheet
allowed by its hash, no script, and the headers that keep the page from being framed, cached
or made to post anywhere but here and the store's own return URLs."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache

import jinja2
from starlette.responses import HTMLResponse, RedirectResponse, Response

from snapshoe.sandbox_pg.checkout import Window, WindowError


@dataclass(frozen=True, slots=True)
class Assets:
    env: jinja2.Environment
    css: str
    css_source: str  # the CSP source of the stylesheet: 'sha256-...'


@cache
def assets() -> Assets:
    """Built on first use (nothing is read at import time)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("snapshoe.sandbox_pg", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    loader = env.loader
    assert loader is not None
    css = loader.get_source(env, "checkout.css")[0]
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return Assets(env, css, f"'sha256-{digest}'")


def csp(form_action: str) -> str:
    return (
        f"default-src 'none'; style-src {assets().css_source}; form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def _headers(form_action: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp(form_action),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def window_page(window: Window, signature: str) -> Response:
    """The window itself. Its form posts here ('self'); the answer to that post redirects to
    successUrl or failUrl, which browsers check against ``form-action`` too, so their origins
    are listed."""
    a = assets()
    html = a.env.get_template("checkout.html.j2").render(
        css=a.css, window=window, amount=f"{window.amount:,}", signature=signature
    )
    form_action = " ".join(["'self'", *window.origins()])
    return HTMLResponse(html, headers=_headers(form_action))


def error_page(error: WindowError) -> Response:
    a = assets()
    html = a.env.get_template("checkout_error.html.j2").render(css=a.css, error=error)
    return HTMLResponse(html, status_code=400, headers=_headers("'none'"))


def redirect(url: str) -> Response:
    """303: the browser follows with a GET, as after Toss's window."""
    return RedirectResponse(
        url,
        status_code=303,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
