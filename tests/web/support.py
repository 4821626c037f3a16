"""A small browser stand-in for the UI tests: cookies by hand (they are Secure, and the test
server is plain HTTP), CSRF tokens read off the page, forms posted like a browser posts them."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

import httpx

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Browser:
    """An httpx client that keeps cookies the way a browser would for this origin."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url, timeout=60, follow_redirects=False)
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            self.set_cookie_headers.append(header)
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                expired = morsel["max-age"] == "0" or (
                    morsel["expires"] and "1970" in morsel["expires"]
                )
                if expired or morsel.value in ("", '""'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def get(self, path: str, *, follow: bool = True, **kwargs: Any) -> httpx.Response:
        headers = self._headers(kwargs.pop("headers", None))
        response = self.client.get(path, headers=headers, **kwargs)
        self._remember(response)
        while follow and response.is_redirect:
            location = response.headers["location"]
            response = self.client.get(location, headers=self._headers(None))
            self._remember(response)
        return response

    def post_form(
        self,
        path: str,
        data: dict[str, Any],
        *,
        csrf: str | None = None,
        follow: bool = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a form; ``csrf`` defaults to the token of the last page fetched from ``path``'s
        page (pass it explicitly when the form lives on another page)."""
        body = dict(data)
        if csrf is not None:
            body["csrf_token"] = csrf
        sent = {"Origin": self.base_url, **(headers or {})}
        response = self.client.post(path, data=body, headers=self._headers(sent))
        self._remember(response)
        while follow and response.is_redirect:
            response = self.client.get(response.headers["location"], headers=self._headers(None))
            self._remember(response)
        return response

    def login(self, username: str, password: str) -> httpx.Response:
        page = self.get("/login")
        return self.post_form(
            "/login",
            {"username": username, "password": password},
            csrf=csrf_of(page.text),
            follow=False,
        )

    def close(self) -> None:
        self.client.close()
