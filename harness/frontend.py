"""The real ComfyUI front-end in headless Chromium (Debian's chromium + the playwright package)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]

# The settings a test user starts with (ComfyUI keeps them in <user dir>/default/comfy.settings.json):
# - TutorialCompleted: no template browser over the page on the first start;
# - Validation.Workflows: the front-end checks a loaded workflow against its schema and says "Invalid workflow"
#   when it fails. On by default in 1.32.9 and 1.35.9, off from 1.49 on: on here, so the check means the same on
#   every front-end of the matrix.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Validation.Workflows": True}
# 1.32.9 only: an "Introducing Nodes 2.0" banner above the page, until dismissed once.
DISMISS_BANNER = "localStorage.setItem('vueNodesBannerDismissed', 'true')"
VIEWPORT = (1600, 900)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def write_settings(user_dir: Path, settings: dict | None = None) -> Path:
    """The front-end settings of the server's default user (read by the server on every page load)."""
    path = user_dir / "default" / "comfy.settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**SETTINGS, **(settings or {})}, indent=1))
    return path


def reset_settings(server) -> None:
    """Back to the test user's settings: the front-end saves what a test changes (an open side panel, a dialog's
    "don't show again") on the server, where the next test's page would find it."""
    write_settings(Path(server.work_dir) / "user")


@contextlib.contextmanager
def chromium() -> Iterator:
    """Headless Chromium (playwright's Browser); new_context() gives each test a fresh user."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium is not installed (Debian package 'chromium'); scripts/setup_host.sh installs it.")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def new_context(launched, viewport: tuple[int, int] = VIEWPORT):
    """A fresh browser context: nothing kept from another one (workflows persist in local storage)."""
    context = launched.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.add_init_script(DISMISS_BANNER)
    return context


@contextlib.contextmanager
def browser(viewport: tuple[int, int] = VIEWPORT) -> Iterator:
    """A fresh browser context in its own Chromium."""
    with chromium() as launched:
        yield new_context(launched, viewport)


def open_page(context, url: str, timeout_ms: int = 90_000):
    """A page of the context at `url`, with the front-end's app ready."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=timeout_ms)
    return page


@contextlib.contextmanager
def browser_page(url: str, timeout_ms: int = 90_000, viewport: tuple[int, int] = VIEWPORT) -> Iterator:
    """A page with ComfyUI's front-end loaded from `url` (window.app ready)."""
    with browser(viewport) as context:
        yield open_page(context, url, timeout_ms)
