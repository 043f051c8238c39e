"""Serve a folder of wheels as a PEP 503 simple index on 127.0.0.1 (a stand-in for PyTorch's CPU wheel index,
which CI cannot reach), print its URL on the first line of stdout, and serve until killed.

    python3 .ci/torch-index.py /opt/wheels      # -> http://127.0.0.1:PORT/simple

Each wheel is listed under its normalised project name with its SHA-256 in the link, as PyPI and PyTorch's
index list theirs; the folder is read once at start.
"""

from __future__ import annotations

import hashlib
import html
import re
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import mkdtemp
from urllib.parse import quote


def build_index(wheels: Path, root: Path) -> int:
    """Lay out ``root/simple/<project>/index.html`` with links to ``root/files/<wheel>`` (hard links, or
    copies across file systems). Returns the number of wheels."""
    projects: dict[str, list[tuple[str, str]]] = {}
    (root / "files").mkdir(parents=True)
    for wheel in sorted(wheels.glob("*.whl")):
        name = re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        target = root / "files" / wheel.name
        try:
            target.hardlink_to(wheel)
        except OSError:
            target.write_bytes(wheel.read_bytes())
        projects.setdefault(name, []).append((wheel.name, digest))
    for name, files in projects.items():
        page = root / "simple" / name / "index.html"
        page.parent.mkdir(parents=True)
        links = "".join(
            f'<a href="../../files/{quote(f)}#sha256={d}">{html.escape(f)}</a>\n' for f, d in files
        )
        page.write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n", encoding="utf-8")
    return sum(len(f) for f in projects.values())


def main() -> None:
    wheels = Path(sys.argv[1] if len(sys.argv) > 1 else "/opt/wheels")
    root = Path(mkdtemp(prefix="torch-index-"))
    if build_index(wheels, root) == 0:
        sys.exit(f"error: no wheels in {wheels}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    print(f"http://127.0.0.1:{server.server_address[1]}/simple", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
