"""GET a URL with every bound a fetch of untrusted references needs.

* hosts: only those in the allow-list (host or host:port), plus hosts a caller trusts with a
  credential (`trusted(url)` returns the headers to send, e.g. Label Studio's token); every
  redirect is checked again, and a credential never follows a redirect to another host;
* size: the declared Content-Length and the streamed bytes, against `max_bytes`;
* time: each request and the whole fetch (redirects included) within `timeout_s`;
* redirects: at most `max_redirects`, to http(s) only.

Failures say whether trying again may help (`permanent`): timeouts, connection errors, 408, 429
and 5xx are transient; a host not allowed, a 4xx, too many bytes or redirects are permanent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

REDIRECTS = (301, 302, 303, 307, 308)
# (url) → headers to send when the caller trusts that host with a credential, else None.
Trust = Callable[[httpx.URL], dict[str, str] | None]


class FetchFailed(Exception):
    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3


class BoundedHttp:
    def __init__(self, limits: FetchLimits, allowed_hosts: tuple[str, ...] = (), setting: str = "") -> None:
        """`setting`: the configuration that widens the allow-list, named in refusals."""
        self.limits = limits
        self._allowed = {h.strip().lower() for h in allowed_hosts if h.strip()}
        self._setting = setting
        self.client = httpx.Client(timeout=httpx.Timeout(limits.timeout_s), follow_redirects=False, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def allowed(self, url: httpx.URL) -> bool:
        host = url.host.lower()
        return host in self._allowed or f"{host}:{url.port}" in self._allowed

    def get(self, first: str, trusted: Trust | None = None, renew: Callable[[], None] | None = None) -> bytes:
        """The body of `first` (following allowed redirects); `renew()` is called once on a 401 from a
        trusted host (an access token that expired early) before asking again."""
        deadline = time.monotonic() + self.limits.timeout_s
        try:
            url = httpx.URL(first)
        except (httpx.InvalidURL, ValueError) as exc:
            raise FetchFailed(f"not a URL: {exc}", True) from None
        renewed = False
        hops = 0
        while True:
            if url.scheme not in ("http", "https"):
                raise FetchFailed(f"{url.scheme}: URLs are not fetched", True)
            headers = trusted(url) if trusted is not None else None
            if headers is None and not self.allowed(url):
                where = f" ({self._setting})" if self._setting else ""
                raise FetchFailed(f"host {url.host!r} is not allowed{where}", True)
            try:
                with self.client.stream("GET", url, headers=headers or {}) as r:
                    if r.status_code in REDIRECTS:
                        hops += 1
                        if hops > self.limits.max_redirects:
                            raise FetchFailed(f"more than {self.limits.max_redirects} redirects", True)
                        location = r.headers.get("location")
                        if not location:
                            raise FetchFailed(f"HTTP {r.status_code} without a Location", True)
                        url = httpx.URL(urljoin(str(url), location))
                        continue
                    if r.status_code == 401 and headers and renew is not None and not renewed:
                        renewed = True
                        renew()
                        continue
                    if r.status_code in (408, 429) or r.status_code >= 500:
                        raise FetchFailed(f"HTTP {r.status_code} from {url.host}", False)
                    if r.status_code != 200:
                        hint = " (is the credential right?)" if headers and r.status_code in (401, 403) else ""
                        raise FetchFailed(f"HTTP {r.status_code} from {url.host}{hint}", True)
                    return self._body(r, deadline)
            except httpx.TimeoutException:
                raise FetchFailed(f"timed out after {self.limits.timeout_s} s ({url.host})", False) from None
            except httpx.HTTPError as exc:
                raise FetchFailed(f"{type(exc).__name__} ({url.host})", False) from None

    def _body(self, r: httpx.Response, deadline: float) -> bytes:
        declared = r.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_bytes:
            raise FetchFailed(f"{declared} bytes; the limit is {self.limits.max_bytes}", True)
        chunks, size = [], 0
        for chunk in r.iter_bytes():
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise FetchFailed(f"over the limit of {self.limits.max_bytes} bytes", True)
            if time.monotonic() > deadline:
                raise FetchFailed(f"took longer than {self.limits.timeout_s} s", False)
            chunks.append(chunk)
        return b"".join(chunks)
