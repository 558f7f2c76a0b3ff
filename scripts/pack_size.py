"""What the registry package holds: its files, zipped the way `comfy node pack` zips them, against every tracked file.

    .comfy-host/venv/bin/python -m scripts.pack_size

The file set is harness.pack.registry_files() (comfy-cli's rule: git's tracked files less .comfyignore's patterns);
docs/reliability.md ("What ships") quotes this output.
"""

from __future__ import annotations

import io
import subprocess
import zipfile

from harness.host import ROOT
from harness.pack import registry_files


def zipped_mb(files: list[str]) -> float:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(ROOT / name, name)
    return len(buffer.getvalue()) / 1e6


def main() -> None:
    shipped = registry_files()
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], check=True, capture_output=True,
                             text=True).stdout.split()
    pictures = [f for f in shipped if f.endswith((".png", ".jpg"))]
    templates = [f for f in shipped if f.startswith("example_workflows/") and f.endswith(".jpg")]
    print(f"shipped: {len(shipped)} files, {zipped_mb(shipped):.1f} MB zipped; {len(pictures)} pictures "
          f"({len(templates)} template cards, {len(pictures) - len(templates)} in docs/)")
    print(f"tracked: {len(tracked)} files, {zipped_mb(tracked):.1f} MB zipped (what would ship without .comfyignore)")


if __name__ == "__main__":
    main()
