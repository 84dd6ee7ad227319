"""Hook implementations of the `codegen` domain.

Only the domain is declared so far; its model loading, knobs, batches and evaluation arrive
with its issue, and until then `retrofit codegen tune` says which part is missing.
"""

from __future__ import annotations

from typing import Any

from retrofit import Domain, hookimpl


@hookimpl
def retrofit_register_domains(register: Any) -> None:
    register(Domain(name="codegen", help="Code language models, judged by the speed of the correct code they write (not built yet: issue 6)"))
