"""Fail when the built docs site shows markup meant for Sphinx or the network.

Usage: python .ci/check_site.py SITE_DIR
"""

import re
import sys
from pathlib import Path

ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj):(?:`|<code>)")
DOUBLE = re.compile(r"``[^`\n]+``")
REMOTE = re.compile(r"<script[^>]+src=\"https?://")

site = Path(sys.argv[1])
bad = []
for page in sorted(site.rglob("*.html")):
    text = page.read_text(encoding="utf-8")
    for what, pattern in (("Sphinx role", ROLE), ("doubled backticks", DOUBLE),
                          ("script from the network", REMOTE)):
        hits = pattern.findall(text)
        if hits:
            bad.append(f"{page.relative_to(site)}: {len(hits)} x {what}, e.g. {hits[0]!r}")
if bad:
    print("the built site shows literal markup:\n" + "\n".join(bad))
    sys.exit(1)
print(f"site check: {sum(1 for _ in site.rglob('*.html'))} pages clean")
