"""What the console's browser tests share: Debian's chromium driven by Playwright, and where screenshots go.

Playwright cannot download a browser of its own here; `.ci/run` installs Debian's `chromium`. Under CI a missing
chromium is a failure; on a developer's machine without it the browser tests are skipped with the command to run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
LINK = re.compile(r"https?://\S+/console/login/([A-Za-z0-9_-]+)")
# /usr/bin/chromium is a shell wrapper; Playwright must start the browser binary itself.
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and Path(p).exists()),
                None)


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            await browser.close()
