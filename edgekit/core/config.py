"""Base for configs that are data: frozen dataclasses with strict from_dict/to_dict."""
from __future__ import annotations

import dataclasses
import typing
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import UsageError, did_you_mean


class Config:
    """Mixin for frozen dataclasses.

    ``from_dict`` rejects unknown keys (naming the key and where it came from),
    checks each value's type against the annotation, and builds nested configs.
    Subclasses validate values in ``check()`` by raising ``ValueError`` with a
    message that quotes the bad value.
    """
    if TYPE_CHECKING:  # what @dataclass gives every subclass; tells mypy dataclasses.fields() applies
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def check(self) -> None:  # overridden by subclasses
        return None

    def __post_init__(self) -> None:
        try:
            self.check()
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "", prefix: str = ""):
        if not isinstance(data, dict):
            raise UsageError(f"{where}: [{prefix.rstrip('.')}] must be a table, got {data!r}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                raise UsageError(
                    f"{where}: unknown key '{prefix}{key}'{did_you_mean(key, names)}; "
                    f"known keys: {', '.join(prefix + n for n in names)}"
                )
            kwargs[key] = _coerce(hints[key], value, where, prefix + key)
        try:
            return cls(**kwargs)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def _coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint.from_dict(value, where, key + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where}: '{key}' must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(item, v, where, key) for v in value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise UsageError(f"{where}: '{key}' must be {hint.__name__}, got {value!r}")
    return value
