"""Reading one section of the resolved config with checked getters: a missing key, a wrong type
or a value outside its choices is a one-line error naming the full key (``eval.loss=mae``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from landscape_exp.errors import UserError, choice_error


class Section:
    """One config section with checked getters; errors name the full key."""

    def __init__(self, data: Any, prefix: str):
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise UserError(f"{prefix or 'config'} must be a mapping of settings; got {data!r}")
        self.data, self.prefix = data, prefix

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def has(self, k: str) -> bool:
        return k in self.data

    def raw(self, k: str) -> Any:
        if k not in self.data:
            raise UserError(f"the config has no {self.key(k)}; it is set in conf/ (was a config file edited?)")
        v = self.data[k]
        if v == "???":
            raise UserError(f"{self.key(k)} is required; set it with {self.key(k)}=...")
        return v

    def node(self, k: str) -> Section:
        return Section(self.raw(k), self.key(k))

    def int(self, k: str, minimum: int | None = None, null: bool = False) -> Any:
        v = self.raw(k)
        if v is None and null:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
            what = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (" or null" if null else "")
            raise UserError(f"{self.key(k)}={v!r} must be {what}")
        return v

    def float(self, k: str, null: bool = False) -> Any:
        v = self.raw(k)
        if v is None and null:
            return None
        if isinstance(v, str):  # YAML 1.1 reads `1e-3` (no dot) as text
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise UserError(f"{self.key(k)}={v!r} must be a number" + (" or null" if null else ""))
        return float(v)

    def bool(self, k: str) -> bool:
        v = self.raw(k)
        if not isinstance(v, bool):
            raise UserError(f"{self.key(k)}={v!r} must be true or false")
        return v

    def str(self, k: str, null: bool = False, choices: Sequence[str] | None = None) -> Any:
        v = self.raw(k)
        if v is None and null:
            return None
        if v is None or isinstance(v, (Mapping, list, tuple)):
            raise UserError(f"{self.key(k)}={v!r} must be a text value")
        if choices is not None and str(v) not in choices:
            raise choice_error(self.key(k), v, choices)
        return str(v)

    def path(self, k: str) -> str | None:
        v = self.raw(k)
        return None if v in (None, "") else str(v)

    def mapping(self, k: str) -> dict[str, Any]:
        return dict(self.node(k).data)


# ------------------------------------------------------------------------------------------------
# sections
