"""Hook implementations of the `doom` domain.

Only the domain is declared so far; its model loading, knobs, batches and evaluation arrive
with its issue, and until then `retrofit doom tune` says which part is missing.
"""

from __future__ import annotations

from typing import Any

from retrofit import Domain, hookimpl


@hookimpl
def retrofit_register_domains(register: Any) -> None:
    register(Domain(name="doom", help="Arnold-style ViZDoom agents, judged by kills per life and life expectancy (not built yet: issue 5)"))
