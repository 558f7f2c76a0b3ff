"""The real ComfyUI front-end in headless Chromium (Debian's chromium + the playwright package)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def browser_page(url: str, timeout_ms: int = 90_000) -> Iterator:
    """A page with ComfyUI's front-end loaded from `url` (window.app ready)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium is not installed (Debian package 'chromium'); scripts/setup_host.sh installs it.")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=timeout_ms)
            yield page
        finally:
            browser.close()
