"""The audit trail: one tamper-evident record per request, and the login history.

Data flow: the `AuditAddon` turns each finished `Exchange` into an `AuditEntry` and hands
it to the `AuditWriter` (no I/O on the request path). The writer scrubs and enriches
entries in batches, and `AuditStore` appends them to the instance's HMAC chain in the
database, encrypting personal fields under per-subject keys. When the database cannot be
reached, batches go to an fsync'd local spool and are replayed, in order and exactly once,
when it returns. `verify`, `query`, `retention` and `erasure` read and maintain the trail;
`logins` and `known_ips` keep the login history that alerts are raised from.
"""
