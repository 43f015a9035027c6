"""Command-line options built from settings dataclasses (fields declared with
:func:`rollwise.validation.setting`), so an option, its help and its default live in one place."""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from typing import Any

from rollwise.validation import OneOf


def _scalar(hint: Any) -> Any:
    """``int`` for ``int | None`` and the like; ``str`` for anything not a plain scalar."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1:
        hint = args[0]
    return hint if hint in (int, float, str, bool) else str


def add_settings_options(parser: Any, cls: type, prefix: str = "",
                         exclude: tuple[str, ...] = ()) -> None:
    """One ``--[prefix-]name`` option per command-line field of the dataclass ``cls`` (types from
    its annotations, help and choices from its declarations, defaults from the class), except
    those in ``exclude``. Values are checked by the settings' own ``validate``."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", False) or f.name in exclude:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        name = f"--{prefix}{f.name}".replace("_", "-")
        dest = (prefix + f.name).replace("-", "_")
        kind = _scalar(hints[f.name])
        kw: dict[str, Any] = {"dest": dest, "default": default, "help": meta["help"]}
        if kind is bool:
            # an on-or-off flag with both spellings unless it is off by default
            kw["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
        else:
            kw["type"] = kind
            constraint = meta.get("constraint")
            if isinstance(constraint, OneOf):
                kw["choices"] = constraint.options()
                kw["metavar"] = f.name.upper()
                kw["help"] = f"{meta['help']}: {', '.join(map(str, kw['choices']))}"
        kw.update(meta.get("argparse", {}))
        parser.add_argument(name, **kw)


def settings_from_args(cls: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """The ``cls`` instance the parsed options describe (fields without an option keep their
    defaults; not validated)."""
    values, prefix = vars(args), prefix.replace("-", "_")
    kwargs = {f.name: values[prefix + f.name] for f in fields(cls) if prefix + f.name in values}
    return cls(**kwargs)


def flag_error(cls: type, err: Exception, prefix: str = "") -> Exception:
    """``err`` with a leading field name of ``cls`` (``steps must be ...``) written as the option
    the user typed (``--steps must be ...``); other errors unchanged."""
    text = str(err)
    for f in sorted(fields(cls), key=lambda f: -len(f.name)):
        name = prefix + f.name
        if text.startswith((f"{name} ", f"{name}:")) and f.metadata.get("cli", False):
            return type(err)(f"--{name.replace('_', '-')}{text[len(name):]}")
    return err
