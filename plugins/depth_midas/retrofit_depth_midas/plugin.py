"""Hook implementations of the `depth` domain.

Only the domain is declared so far; its model loading, knobs, batches and evaluation arrive
with its issue, and until then `retrofit depth tune` says which part is missing.
"""

from __future__ import annotations

from typing import Any

from retrofit import Domain, hookimpl


@hookimpl
def retrofit_register_domains(register: Any) -> None:
    register(Domain(name="depth", help="MiDaS/DPT depth models, judged by the share of pixels off by more than X % (not built yet: issue 4)"))
