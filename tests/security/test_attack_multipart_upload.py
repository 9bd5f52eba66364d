"""A multipart upload between 1 and 16 MiB is checked for a stray password, not a 500.

Found by the attack on issue 8: the stray-password check reads multipart bodies up to
16 MiB, but it read them with aiohttp's `request.read()`, which refuses anything over the
server's 1 MiB `client_max_size`: a 2 MiB scan upload got the gateway's 500 (and the
check never ran). The body is now read from the stream up to the check's own limit.
"""

from __future__ import annotations

from tests.security.hostile import naive, send

BOUNDARY = "b0undary"


def _upload(name: str, size: int) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="scan.pdf"\r\n'
        f"Content-Type: application/pdf\r\n\r\n"
    ).encode() + b"%" * size + f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_a_two_mib_upload_is_checked_and_forwarded(tmp_path):
    async with naive(tmp_path) as upstream:
        headers = [("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")]
        status, _ = await send(upstream.env.url, "POST", "/echo", headers, _upload("scan", 2 * 1024 * 1024))
        assert status != 500 and upstream.saw("/echo")  # the naive PMS itself may refuse the size
        upstream.seen.clear()
        status, _ = await send(upstream.env.url, "POST", "/echo", headers, _upload("password", 2 * 1024 * 1024))
        assert status == 400 and not upstream.saw("/echo")
