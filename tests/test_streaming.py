"""Bodies far larger than the gateway's memory stream through with its memory flat."""

from __future__ import annotations

import hashlib
import os

import aiohttp

from tests.processes import demo_pms_process, gateway_process, peak_rss_kib

SIZE = int(os.environ.get("GW_TEST_STREAM_BYTES", str(1024**3)))  # 1 GiB each way
PUBLIC = {"login": {"public_paths": ["^/download/", "^/upload$"]}}
MAX_GROWTH_KIB = 96 * 1024


def expected_digest(size: int) -> str:
    pattern = bytes(range(256)) * 256
    digest = hashlib.sha256()
    for offset in range(0, size, len(pattern)):
        digest.update(pattern[: min(len(pattern), size - offset)])
    return digest.hexdigest()


async def test_one_gib_each_way_with_flat_memory(tmp_path):
    with demo_pms_process() as pms, gateway_process(tmp_path, pms, PUBLIC) as (url, process):
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/_gateway/health") as response:
                assert response.status == 200
            baseline = peak_rss_kib(process.pid)

            digest, received = hashlib.sha256(), 0
            async with session.get(f"{url}/download/{SIZE}") as response:
                assert response.status == 200
                async for chunk in response.content.iter_chunked(1 << 20):
                    digest.update(chunk)
                    received += len(chunk)
            assert received == SIZE
            assert digest.hexdigest() == expected_digest(SIZE)

            async def body():
                block = bytes(range(256)) * 4096  # 1 MiB
                for _ in range(SIZE // len(block)):
                    yield block

            async with session.post(url + "/upload", data=body(), headers={"Origin": url}) as response:
                assert response.status == 200, await response.text()
                result = await response.json()
            assert result["bytes"] == SIZE

        growth = peak_rss_kib(process.pid) - baseline
        assert growth < MAX_GROWTH_KIB, f"gateway peak memory grew by {growth} KiB while streaming"
