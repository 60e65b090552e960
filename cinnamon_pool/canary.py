"""The residue canary: run in a new session, it shows what an earlier job could have left in
the browser that the new session can see: cookies, localStorage (origins with storage), tabs.

With ``--isolated`` every session has a context of its own, so a new session sees nothing; a
server that shares one context between sessions (``--shared-browser-context``) shows the last
job's cookies and tabs. The job side runs it on ``rules.canary_share`` of releases without a
gateway; with prepared sessions the gateway runs it in the next job's session before the
container is offered.
"""

from __future__ import annotations

import json
import re

CANARY_CODE = (
    "async (page) => { const state = await page.context().storageState(); "
    "return JSON.stringify({cookies: state.cookies.length, origins: state.origins.length, pages: page.context().pages().length}); }"
)


def residue_in(answer: str) -> str | None:
    """What the canary's answer (``browser_run_code_unsafe`` of :data:`CANARY_CODE`) says was
    left behind; None when the session is clean."""
    match = re.search(r"### Result\s*\n(.*?)(\n###|$)", answer, flags=re.DOTALL)
    try:
        found = json.loads(json.loads(match.group(1).strip())) if match else None
    except (ValueError, TypeError):
        found = None
    if not isinstance(found, dict):
        return f"canary answer not understood: {answer[:200]!r}"
    residue = [f"{key}={found[key]}" for key in ("cookies", "origins") if found.get(key)]
    if found.get("pages", 1) > 1:
        residue.append(f"pages={found['pages']}")
    return ", ".join(residue) or None
