"""Drive the authorization server's HTML pages the way a person in a browser would: read the
forms of each page, fill in the fields by their stable names, press a button, follow redirects
on our own server, stop at the redirect to the app."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

REDIRECT = "https://app.example.org/callback"
LAUNCH_URI = "https://app.example.org/launch"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)[:86]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)  # hidden, text, checked boxes/radios
    checkboxes: list[str] = field(default_factory=list)  # values of name=scope boxes (checked or not)
    buttons: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").upper()))
            return
        if not self.forms:
            return
        f = self.forms[-1]
        name = a.get("name")
        if not name:
            return
        f.names.add(name)
        if tag == "button":
            f.buttons.append(name)
        elif tag == "input":
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if kind == "checkbox":
                    f.checkboxes.append(a.get("value", ""))
                if "checked" in a:
                    f.fields.append((name, a.get("value", "")))
            else:
                f.fields.append((name, a.get("value", "")))


def forms(html: str) -> list[Form]:
    p = _Forms()
    p.feed(html)
    return p.forms


@dataclass
class Page:
    status: int
    html: str
    location: str | None

    def form_with(self, name: str) -> Form:
        for f in forms(self.html):
            if name in f.names:
                return f
        raise AssertionError(f"no form with a {name!r} field on the page: {self.html[:2000]}")


class Browser:
    """A user agent on the server under test (the Smart fixture's token-less client keeps cookies)."""

    def __init__(self, smart: Any) -> None:
        self.smart = smart
        self.root = smart.root

    def _page(self, r: Any) -> Page:
        return Page(r.status_code, r.text, r.headers.get("Location"))

    def get(self, url: str, headers: dict[str, str] | None = None) -> Page:
        return self._page(self.smart.fhir.request("GET", url, headers={"Accept": "text/html", **(headers or {})}))

    def submit(self, form: Form, values: dict[str, str] | None = None, button: str | None = None,
               scopes: list[str] | None = None) -> Page:
        """Submit with the form's own values, `values` replacing fields of the same name, the
        named button pressed; `scopes` replaces the checked scope boxes."""
        values = values or {}
        data = [(k, v) for k, v in form.fields if k not in values and not (scopes is not None and k == "scope")]
        data += list(values.items())
        if scopes is not None:
            data += [("scope", s) for s in scopes]
        if button:
            data.append((button, "1"))
        url = form.action if form.action.startswith("http") else f"{self.root}{form.action}"
        r = self.smart.fhir.request("POST", url, data=urlencode(data),
                                    headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"})
        return self._page(r)


def authorize_url(smart: Any, client_id: str, scope: str, challenge: str | None, *, state: str | None = None,
                  redirect_uri: str = REDIRECT, aud: str | None = None, launch: str | None = None,
                  extra: dict[str, str] | None = None) -> str:
    q = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
         "state": state or uuid.uuid4().hex, "aud": aud or smart.base}
    if challenge is not None:
        q.update(code_challenge=challenge, code_challenge_method="S256")
    if launch is not None:
        q["launch"] = launch
    q.update(extra or {})
    return f"{smart.root}/auth/authorize?{urlencode(q)}"


def redirect_params(location: str | None) -> dict[str, str]:
    assert location, "expected a redirect"
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Flow:
    """One authorization through the pages; what came back to the app's redirect URI."""

    location: str
    params: dict[str, str]
    verifier: str
    state: str
    pages: list[Page]


def log_in_and_approve(smart: Any, browser: Browser, client_id: str, scope: str, *, username: str, password: str,
                       patient: str | None = None, launch: str | None = None, scopes: list[str] | None = None,
                       post: bool = False, redirect_uri: str = REDIRECT) -> Flow:
    verifier, challenge = pkce()
    state = uuid.uuid4().hex
    url = authorize_url(smart, client_id, scope, challenge, state=state, launch=launch, redirect_uri=redirect_uri)
    if post:
        action, _, query = url.partition("?")
        r = smart.fhir.request("POST", action, data=query,
                               headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"})
        page = browser._page(r)
    else:
        page = browser.get(url)
    pages = [page]
    for _ in range(6):
        if page.status == 302:
            break
        assert page.status == 200, page.html[:2000]
        names = {n for f in forms(page.html) for n in f.names}
        if "password" in names:
            page = browser.submit(page.form_with("password"), {"username": username, "password": password})
        elif "approve" in names:
            page = browser.submit(page.form_with("approve"), button="approve", scopes=scopes)
        elif "choose" in names:
            assert patient is not None, "the patient picker was shown"
            page = browser.submit(page.form_with("choose"), {"patient": patient}, button="choose")
        else:
            raise AssertionError(f"unexpected page: {page.html[:2000]}")
        pages.append(page)
    assert page.status == 302, page.html[:2000]
    assert page.location is not None
    return Flow(page.location, redirect_params(page.location), verifier, state, pages)


def exchange(smart: Any, flow: Flow, client_id: str, *, secret: str | None = None, redirect_uri: str = REDIRECT,
             verifier: str | None = None, extra: dict[str, str] | None = None) -> Any:
    data = {"grant_type": "authorization_code", "code": flow.params["code"], "redirect_uri": redirect_uri,
            "code_verifier": flow.verifier if verifier is None else verifier}
    headers = {}
    if secret:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    else:
        data["client_id"] = client_id
    data.update(extra or {})
    return smart.form("/auth/token", data, headers)
