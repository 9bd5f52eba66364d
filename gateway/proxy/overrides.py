"""Method and URL overrides: ways to make the PMS route a request elsewhere than it came.

Many frameworks (Symfony, Laravel, Rails, ASP.NET, IIS URL Rewrite) let a header or the
`_method` parameter replace the request's method or URL. The gateway's access rules,
login interception and audit judge the method and path on the request line, so the PMS
must route on exactly those: override headers are dropped on the way up, and a `_method`
query parameter (which cannot be removed without changing the query the PMS reads) makes
the request refused. A `_method` field in a state-changing body (form, multipart, JSON)
is refused by the body reader that looks for stray passwords
(`gateway.readers.credentials.refuse_stray_credentials`), which reads those bodies anyway.
"""

from __future__ import annotations

OVERRIDE_HEADERS = frozenset(
    {"x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"}
)
METHOD_PARAMETER = "_method"


def overrides_method_in_query(query: str) -> bool:
    """True when the raw query string names `_method` to some reader: any case or
    encoding, `_method[]`, `_method%00` (PHP cuts names at NUL), `;` as a separator,
    compatibility letters; read by the credential reader's name folding."""
    if "method" not in query.lower() and "%" not in query:
        return False  # the common case, without parsing
    from gateway.readers.credentials import AmbiguousCredentials, refuse_in_query  # it imports this module

    try:
        refuse_in_query(query, (METHOD_PARAMETER,))
    except AmbiguousCredentials:
        return True
    return False
