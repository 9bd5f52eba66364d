"""What a browser is told about the pages of a session: keep none of them once it ends.

Back after logout must not bring a reservation with card and passport numbers back
from the browser's cache. So every proxied page of a session is sent
`Cache-Control: no-store` (the policy's `sessions.cacheable_paths`, e.g. static assets,
excepted), and the answer that ends a session (logout, idle or absolute expiry, a
revocation noticed on a request) sends `Clear-Site-Data: "cache"` and expires the
session cookie explicitly. Not `"cookies"`: that would also wipe the device and
remember-me cookies, which outlive a session by design.
"""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.policy.schema import SessionPolicy
from gateway.sessions.cookies import SESSION_COOKIE, clear_cookie

CLEAR_CACHE = '"cache"'


def keep_out_of_cache(headers: CIMultiDict[str], rules: SessionPolicy, path: str) -> None:
    """A session's page: never stored, unless the policy says the path may be."""
    if not rules.is_cacheable(path):
        headers["Cache-Control"] = "no-store"
        headers.popall("Expires", None)


def session_ended(headers: CIMultiDict[str], *, secure: bool) -> None:
    """The answer that ends a session: empty the cache, expire the session cookie."""
    headers["Clear-Site-Data"] = CLEAR_CACHE
    headers["Cache-Control"] = "no-store"
    headers.add("Set-Cookie", clear_cookie(SESSION_COOKIE, secure=secure))
