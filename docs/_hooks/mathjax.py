"""MkDocs hook: serve MathJax from the built site, never from the network.

The MathJax 3 SVG renderer (one self-contained file) comes from the
``django-static-mathjax`` package (a pip dependency of the ``docs`` extra;
it ships MathJax's static files and needs nothing else) and is copied to
``assets/mathjax/tex-svg.js`` in the built site.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

TARGET = Path("assets") / "mathjax" / "tex-svg.js"


def _source() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("MathJax not found: pip install -e '.[docs]' (django-static-mathjax)")
    path = Path(next(iter(spec.submodule_search_locations))) / "static/mathjax/es5/tex-svg.js"
    if not path.is_file():
        raise RuntimeError(f"MathJax file missing: {path}")
    return path


def on_post_build(config: Any, **kwargs: Any) -> None:
    """Copy the renderer into the site folder."""
    dest = Path(config["site_dir"]) / TARGET
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_source(), dest)
