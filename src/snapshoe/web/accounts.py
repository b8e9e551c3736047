"""The buyer's account pages: sign up, verify the mailed code, log in and out, reset a
password. Every answer of the API that could tell whether an email is registered is shown the
same way (the API answers alike; so do these pages)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapshoe.web.pages import Page, local_path

router = APIRouter(include_in_schema=False)


def _email(form: dict[str, str]) -> str:
    return form.get("email", "").strip()[:254]


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    page = await Page.open(request)
    return await page.render("store/signup.html", error=None, form={})


@router.post("/signup")
async def signup(request: Request) -> Response:
    page = await Page.open(request)
    form = await page.form()
    body = {
        "email": _email(form),
        "password": form.get("password", ""),
        "name": form.get("name", "").strip()[:100],
    }
    # The shop's mails go out in the language the buyer signed up in (docs/accounts.md).
    r = await page.call("POST", "/api/users", json={**body, "lang": page.session.lang})
    if r.status == 202:
        page.flash("signup_done")
        return await page.redirect("/verify?" + urlencode({"email": body["email"]}))
    return await page.render(
        "store/signup.html",
        status=_status(r.status),
        error=page.words(r),
        form={**body, "password": ""},
    )


def _status(api_status: int) -> int:
    """A form shown again after a refusal: the API's 4xx, or 503 when it could not answer."""
    return api_status if 400 <= api_status < 500 else 503


@router.get("/verify")
async def verify_page(request: Request) -> Response:
    page = await Page.open(request)
    email = request.query_params.get("email", "")[:254]
    return await page.render("store/verify.html", error=None, email=email)


@router.post("/verify")
async def verify(request: Request) -> Response:
    page = await Page.open(request)
    form = await page.form()
    email = _email(form)
    if form.get("action") == "resend":
        r = await page.call("POST", "/api/users/verification/resend", json={"email": email})
        if r.status == 202:
            page.flash("resent")
            return await page.redirect("/verify?" + urlencode({"email": email}))
    else:
        body = {"email": email, "code": form.get("code", "").strip()[:12]}
        r = await page.call("POST", "/api/users/verification", json=body)
        if r.ok:
            if page.session.signed_in:
                await page.refresh_user()
                page.flash("verified")
                return await page.redirect(local_path(page.session.next_path))
            page.flash("verified")
            return await page.redirect("/login")
    return await page.render(
        "store/verify.html", status=_status(r.status), error=page.words(r), email=email
    )


@router.get("/login")
async def login_page(request: Request) -> Response:
    page = await Page.open(request)
    return await page.render("store/login.html", error=None, email="")


@router.post("/login")
async def login(request: Request) -> Response:
    page = await Page.open(request)
    form = await page.form()
    email = _email(form)
    r = await page.call(
        "POST", "/api/auth/login", json={"email": email, "password": form.get("password", "")}
    )
    if r.status != 200:
        return await page.render(
            "store/login.html", status=_status(r.status), error=page.words(r), email=email
        )
    me = await page.deps.api.call(
        "GET", "/api/users/me", token=r.body["access_token"], client_ip=page.client_ip
    )
    if not me.ok:
        return await page.render("store/login.html", status=503, error=page.words(me), email=email)
    next_path = local_path(page.session.next_path)
    page.session.sign_in(r.body, me.body)
    page.session.next_path = None
    if not me.body.get("email_verified"):
        page.flash("need_verified")
        return await page.redirect("/verify?" + urlencode({"email": email}))
    return await page.redirect(next_path)


@router.post("/logout")
async def logout(request: Request) -> Response:
    page = await Page.open(request)
    await page.form()
    if page.session.refresh_token:
        await page.deps.api.call(
            "POST",
            "/api/auth/logout",
            json={"refresh_token": page.session.refresh_token},
            client_ip=page.client_ip,
        )
    page.session.sign_out()
    page.flash("logged_out")
    return await page.redirect("/")


@router.get("/password-reset")
async def reset_page(request: Request) -> Response:
    page = await Page.open(request)
    email = request.query_params.get("email", "")[:254]
    step = "confirm" if request.query_params.get("step") == "confirm" else "ask"
    return await page.render("store/reset.html", error=None, email=email, step=step)


@router.post("/password-reset")
async def reset(request: Request) -> Response:
    page = await Page.open(request)
    form = await page.form()
    email = _email(form)
    if form.get("step") == "confirm":
        body = {
            "email": email,
            "code": form.get("code", "").strip()[:12],
            "new_password": form.get("new_password", ""),
        }
        r = await page.call("POST", "/api/auth/password-reset/confirm", json=body)
        if r.status == 204:
            page.flash("reset_done")
            return await page.redirect("/login")
        step = "confirm"
    else:
        r = await page.call("POST", "/api/auth/password-reset", json={"email": email})
        if r.status == 202:
            page.flash("reset_sent")
            return await page.redirect(
                "/password-reset?" + urlencode({"step": "confirm", "email": email})
            )
        step = "ask"
    return await page.render(
        "store/reset.html", status=_status(r.status), error=page.words(r), email=email, step=step
    )
