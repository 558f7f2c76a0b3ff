"""The documentation says what the pack does: the API reference and the node help pages against the nodes' own
schemas, and every link of the README, docs/, CONTRIBUTING.md and the help pages leads somewhere.

The help pages' appearance in the front-end's panel is tests/test_frontend_help.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.host import ROOT
from harness.pack import listed_nodes, web_directory

REPO_URL = "https://github.com/ComfyUI-RLG/ComfyUI-RLG"
HELP_DIR = web_directory() / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md"), *HELP_DIR.glob("*.md")])
LINK_INPUT_TYPES = {"MODEL", "CONDITIONING", "LATENT", "IMAGE", "RLG_RL_MODELS"}


def _info() -> dict[str, dict]:
    """{node id: the node's /object_info entry}, from its V3 schema as the server builds it, for each node the node
    library lists (a deprecated node is hidden there and documented nowhere)."""
    return {node_id: cls.GET_NODE_INFO_V1() for node_id, cls in listed_nodes().items()}


def _inputs(info: dict) -> list[tuple[str, str, str, dict, list | None]]:
    """(name, type, required/optional, options, choices) of each input, in the schema's order."""
    out = []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            choices = kind if isinstance(kind, list) else options.get("options")
            out.append((name, "COMBO" if isinstance(kind, list) else kind, section, options, choices))
    return out


def _tables(text: str, heading: str) -> dict[str, list[list[str]]]:
    """{heading text: the rows (cells) of the first table under it} for the headings of one level."""
    out = {}
    for block in re.split(rf"^{re.escape(heading)} ", text, flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        rows = [line for line in body.split("\n\n#")[0].splitlines() if line.startswith("|")]
        out[title.strip()] = [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]
    return out


def _number(value) -> str:
    return f"{value:g}"


# ---------------------------------------------------------------------------------------------- docs/api.md

def test_api_reference_lists_each_node_as_its_schema_has_it():
    """docs/api.md's section "The nodes, for graphs built by hand": a table per class_type with each input's type,
    whether it is required, its default and its range or choices, and the node's outputs."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## The nodes, for graphs built by hand", 1)[1]
    tables = {title.strip("`"): rows for title, rows in _tables(section, "###").items()}
    info = _info()
    assert set(tables) == set(info), f"documented {sorted(tables)}, the pack has {sorted(info)}"
    for node_id, node in info.items():
        rows = tables[node_id]
        assert [r[0].strip("`") for r in rows] == [i[0] for i in _inputs(node)], node_id
        for (name, kind, section_name, options, choices), row in zip(_inputs(node), rows, strict=True):
            where = f"{node_id}.{name}: {row}"
            assert row[1] == kind and row[2] == section_name, where
            default = options.get("default")
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                assert row[3] == _number(default), where
            elif isinstance(default, str):
                assert row[3] == (f"`{default}`" if default else "(empty)"), where
            else:
                assert row[3] == "", where
            if kind in ("INT", "FLOAT"):
                assert row[4] == f"{_number(options['min'])} to {_number(options['max'])}", where
            elif kind == "COMBO" and not row[4].startswith("a file in"):
                assert row[4] == ", ".join(f"`{c}`" for c in choices), where
            elif kind in LINK_INPUT_TYPES or options.get("forceInput"):
                assert row[4].startswith("a link"), where
        outputs = ", ".join(f"`{t}`" + (f" ({n})" if n != t else "") for t, n in
                            zip(node["output"], node["output_name"], strict=True))
        assert f"### `{node_id}`\n\n{node['display_name']}. Outputs: {outputs}." in section, node_id


def test_every_template_twin_the_api_page_points_to_is_there():
    from harness import templates

    for name in templates.templates(templates.PACK_NAME):
        assert (ROOT / "example_workflows_api" / f"{name}.json").is_file(), name
    assert "example_workflows_api/rlg_sd35_flowgrpo_pickscore.json" in (ROOT / "docs" / "api.md").read_text()


# ---------------------------------------------------------------------------------------------- the help pages

@pytest.mark.parametrize("node_id", sorted(listed_nodes()))
def test_every_node_has_a_help_page_with_each_of_its_inputs(node_id):
    """js/docs/<node id>.md, where the front-end's help panel looks (tests/test_frontend_help.py opens it): titled
    with the node's name, and its inputs table names every input of the node, in order, and nothing else."""
    page = HELP_DIR / f"{node_id}.md"
    assert page.is_file(), f"no help page for {node_id} at {page}"
    node = listed_nodes()[node_id].GET_NODE_INFO_V1()
    text = page.read_text()
    assert text.startswith(f"# {node['display_name']}\n"), text[:80]
    rows = _tables(text, "##").get("Inputs")
    assert rows, f"{page.name}: no table under '## Inputs'"
    assert [r[0].strip("`") for r in rows] == [i[0] for i in _inputs(node)], page.name


def test_a_deprecated_node_needs_no_page():
    """What the pages are checked against leaves out a node whose V3 schema is deprecated (hidden from the node
    library), and keeps one that is not."""
    from comfy_api.latest import io

    def node(node_id: str, deprecated: bool) -> type:
        class Node(io.ComfyNode):
            @classmethod
            def define_schema(cls) -> io.Schema:
                return io.Schema(node_id=node_id, category="test", inputs=[io.String.Input("text")],
                                 outputs=[io.Model.Output()], is_deprecated=deprecated)
        return Node

    classes = {"Listed": node("Listed", False), "Hidden": node("Hidden", True)}
    assert list(listed_nodes(classes)) == ["Listed"]
    assert listed_nodes(), "the pack lists no node"


# ---------------------------------------------------------------------------------------------- links

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def _target(page: Path, link: str) -> tuple[Path | None, str]:
    """Where a link of a page leads in the checkout (None: outside it), and its anchor."""
    url, _, anchor = link.partition("#")
    if url.startswith(REPO_URL):
        rest = url[len(REPO_URL):].lstrip("/")
        return (ROOT / rest.split("/", 2)[2] if rest.startswith("blob/") else ROOT / "README.md"), anchor
    if "://" in url or url.startswith("mailto:"):
        return None, ""
    return (page.parent / url).resolve() if url else page, anchor


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_leads_to_a_file_and_heading_of_the_checkout(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        target, anchor = _target(page, link)
        if target is None:
            continue
        if not target.exists():
            broken.append(f"{link}: no {target}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    assert not broken, broken


def test_the_readme_is_read_in_two_minutes():
    """About 200 lines; the depth lives in docs/ and CONTRIBUTING.md."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, len(lines)
