"""The node help pages (js/docs/<node id>.md) in the front-end's own help panel, opened from the node.

Every front-end of the matrix (1.32.9, 1.35.9, 1.49.6, 1.58.1) has the panel. Its bundle fetches a custom node's
page from /extensions/<pack>/docs/<node id>/<locale>.md, then /extensions/<pack>/docs/<node id>.md, and falls back
to the node's description and tooltips when neither is there. A selected node's toolbox has an (i) button
(data-testid="info-button"): 1.32.9 opens the page in the node library's side panel, 1.35.9 and newer in the
right-hand panel's Info tab; 1.49.6's toolbox has no (i), and its properties panel (the button at the top right)
has the same Info tab. All render the page into .node-help-content. Here each node of the pack is added to an
empty graph, selected, its (i) clicked, and the page's own title, first paragraph and inputs must appear there.
A deprecated node (hidden from the node library, harness.pack.listed_nodes) has no page.
"""

from __future__ import annotations

import re

import pytest

from harness.pack import listed_nodes, web_directory

pytestmark = [pytest.mark.server, pytest.mark.frontend]

HELP_DIR = web_directory() / "docs"
OLDEST_WITH_PANEL = (1, 32, 9)  # the oldest front-end of the matrix; every one of the matrix has the panel

ADD_AND_SELECT = """(nodeId) => {
  app.graph.clear();
  const node = LiteGraph.createNode(nodeId);
  node.pos = [500, 300];
  app.graph.add(node);
  app.canvas.selectNode(node);
  app.canvas.setDirty(true, true);
}"""
RESELECT = """() => {
  const node = (app.graph.nodes ?? app.graph._nodes)[0];
  app.canvas.deselectAll();
  app.canvas.selectNode(node);
  app.canvas.setDirty(true, true);
}"""
SHOWN = "() => (document.querySelector('.node-help-content')?.innerText ?? '')"


def _plain(markdown: str) -> str:
    """What a markdown line reads as once rendered: no code ticks, emphasis or link targets."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", markdown)
    return re.sub(r"\s+", " ", text.replace("`", "").replace("**", "")).strip()


def _expected(node_id: str) -> tuple[str, str, list[str]]:
    """The page's title, the opening of its first paragraph, and the names in its inputs table."""
    text = (HELP_DIR / f"{node_id}.md").read_text()
    title = text.splitlines()[0].removeprefix("# ")
    first = _plain(text.split("\n\n")[1].splitlines()[0])
    inputs = re.findall(r"^\| `([^`]+)` \|", text.split("## Inputs", 1)[1], flags=re.M)
    return title, first, inputs


def _open_help(page) -> None:
    """The (i) button of the selected node's toolbox; where the toolbox has none (1.49.6 shows only its "more
    options" there), the properties panel's Info tab, that front-end's way to the same page."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    button = page.locator('[data-testid="info-button"]').first
    toolbox = page.locator('[data-testid="info-button"], [data-testid="more-options-button"]').first
    toolbox.wait_for(state="visible", timeout=20_000)
    page.wait_for_timeout(1_000)  # the rest of the toolbox, drawn with it
    if not button.is_visible():
        page.locator('button[aria-label="Toggle properties panel"]').click()
        info = page.get_by_role("tab", name="Info", exact=True)
        for _ in range(6):  # the panel opens on the canvas-wide tabs until it has seen the selection
            try:
                info.wait_for(state="visible", timeout=5_000)
                break
            except PlaywrightTimeout:
                page.evaluate(RESELECT)
        info.click(timeout=10_000)
        return
    button.click()


@pytest.fixture(scope="module")
def chromium():
    from harness.frontend import chromium as launch

    with launch() as launched:
        yield launched


@pytest.mark.parametrize("node_id", sorted(listed_nodes()))  # deprecated nodes are hidden
def test_help_page_opens_from_its_node(workflow_server, chromium, node_id):
    from harness.frontend import new_context, open_page, reset_settings

    reset_settings(workflow_server)
    context = new_context(chromium)
    try:
        page = open_page(context, workflow_server.url)
        version = page.evaluate("window.__COMFYUI_FRONTEND_VERSION__")
        if tuple(int(p) for p in version.split(".")) < OLDEST_WITH_PANEL:
            pytest.skip(f"front-end {version} is older than the matrix's oldest ({OLDEST_WITH_PANEL}): whether it has "
                        "the node help panel is not known here")
        fetched = []
        page.on("request", lambda request: fetched.append(request.url))
        page.evaluate(ADD_AND_SELECT, node_id)
        _open_help(page)
        title, first, inputs = _expected(node_id)
        page.wait_for_function(f"() => ({SHOWN})().includes({title!r})", timeout=30_000)
        page.wait_for_timeout(300)
        shown = re.sub(r"\s+", " ", page.evaluate(SHOWN))
    finally:
        context.close()
        reset_settings(workflow_server)  # the open panel is saved on the server otherwise
    assert any(url.endswith(f"/extensions/ComfyUI-RLG/docs/{node_id}.md") for url in fetched), fetched
    assert shown.startswith(title), shown[:200]
    assert first[:60] in shown, (first, shown[:400])  # the page itself, not the fallback (the node's description)
    missing = [name for name in inputs if name not in shown]
    assert inputs and not missing, f"{node_id}: inputs not shown {missing}"
