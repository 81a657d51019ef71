"""The options of components (priors, likelihoods, nets), declared where the component is.

Each component class declares its options as ``options: dict[str, Option]``: the type, the
default, the allowed values and a one-line doc, in one place. :func:`fill` checks a dict of
given options against those declarations and returns every option filled in; an option that the
component does not declare, or a bad value, is a one-line :class:`~pyrovae.errors.PyrovaeError`
that names the key, the value and what is allowed. Nothing outside the component's own file
names one of its options: ``pyrovae.config`` and ``pyrovae.VAE`` read the declarations.

A component is then given in one of two forms, everywhere (config files, overrides, ``VAE``):

- nested under the component: ``model.prior: {name: mog, components: 10}``,
  ``model.prior.components=10``, ``VAE(prior={"name": "mog", "components": 10})``;
- flat, the form of earlier versions: ``model.components=10``, ``VAE(components=10)``. A flat
  key is an option's *alias* (:attr:`Option.alias`, by default the option's own name: the
  likelihoods' ``scale`` is ``likelihood_scale``), and goes to whichever chosen component
  declares it (:func:`route`); one that none of them declares is a one-line error naming the
  components that take it.

``None`` as a value means "not given": the option takes its default.

Objectives (``train.loss``) declare no options. Their one setting, the number of particles K
(``train.num_particles``), is taken by every objective, and is a setting of the training loop as
much as of the bound (``train.eval_particles`` is its evaluation twin), so it stays in
``train``. ``train.loss`` is a name only: an objective with a hyperparameter of its own (the
alpha of a Renyi bound) is, as things are, one registered subclass per value. Options for
objectives would need ``train.loss`` to take the nested form of the model's components; that is
not built.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyrovae.errors import PyrovaeError

#: The ranges an option's value (each entry, for a list) can be restricted to.
RANGES: dict[str, Callable[[float], bool]] = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
}
#: The types an option can have; ``list`` is a list of whole numbers (layer widths).
TYPES = (int, float, str, bool, list)


def _whole(value: Any) -> int | None:
    """``value`` as an int if it is a whole number (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and value == int(value):
        return int(value)
    try:  # a 0-d tensor or numpy scalar
        item = value.item()
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    return None if item is value else _whole(item)


def yaml_boolean(value: Any) -> str:
    """For a bad value of a text option that YAML read as a boolean (yes, no, on, off, true,
    false reach it as True/False, or their text): the words that say so; else nothing."""
    if isinstance(value, bool) or value in ("True", "False"):
        return " (YAML reads yes, no, on, off, true and false as True or False)"
    return ""


@dataclass(frozen=True)
class Option:
    """One option of a component.

    Args:
        type: ``int``, ``float``, ``str``, ``bool`` or ``list`` (a list of whole numbers).
        default: the value when the option is not given (a tuple for a ``list``).
        doc: one line: what the option is.
        choices: the allowed values of a ``str`` option.
        range: ``"> 0"`` or ``">= 0"``: the allowed numbers (each entry, for a ``list``).
        min_items: the fewest entries of a ``list``.
        alias: the flat config key (``model.<alias>``) and ``VAE`` keyword of the option;
            None: the option's own name.
    """

    type: type
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    range: str = ""
    min_items: int = 0
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"Option type must be one of {TYPES}, got {self.type!r}")
        if self.range and self.range not in RANGES:
            raise TypeError(f"Option range must be one of {list(RANGES)}, got {self.range!r}")

    def allowed(self) -> str:
        """What a value must be, as the end of "... must be <allowed>"."""
        if self.type is list:
            what = "positive integers" if self.range == "> 0" else "whole numbers"
            if self.min_items:
                what += f" (at least {'one' if self.min_items == 1 else self.min_items})"
            example = list(self.default) or [32, 64]
            return f"a list of {what} such as {example}"
        if self.choices:
            return f"one of: {', '.join(self.choices)}"
        what = {int: "a whole number", float: "a finite number", str: "a string",
                bool: "true or false"}[self.type]
        return f"{what} {self.range}".strip()

    def check(self, value: Any, key: str) -> Any:
        """``value`` checked and normalized (a float for a ``float``, a list of ints for a
        ``list``), or a one-line error naming ``key``, the value and what is allowed."""
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise PyrovaeError(f"unknown {key} {value!r}{yaml_boolean(value)}; choose one "
                                   f"of: {', '.join(self.choices)}")
            return value
        if self.type is list:
            return self._check_list(value, key)
        if self.type is int:
            number = _whole(value)
        elif self.type is float:
            number = None if isinstance(value, bool) or not isinstance(
                value, numbers.Real) or not math.isfinite(value) else float(value)
        else:
            number = value if isinstance(value, self.type) else None
        if number is None:
            typed = {int: "a whole number", float: "a finite number", str: "a string",
                     bool: "true or false"}[self.type]
            raise PyrovaeError(f"{key} must be {typed}, got {value!r}")
        if self.range and not RANGES[self.range](number):
            raise PyrovaeError(f"{key} must be {self.range}, got {value!r}")
        return number

    def _check_list(self, value: Any, key: str) -> list[int]:
        items = None
        if not isinstance(value, (str, bytes, Mapping)):
            try:
                items = [_whole(v) for v in value]
            except TypeError:
                items = None
        if items is None or any(v is None or (self.range and not RANGES[self.range](v))
                                for v in items) or len(items) < self.min_items:
            raise PyrovaeError(f"{key} must be {self.allowed()}, got {value!r}")
        return items

    def key(self, name: str) -> str:
        """The flat key of the option called ``name``."""
        return self.alias or name


Specs = Mapping[str, Option]


def fill(specs: Specs, given: Mapping[str, Any], component: str,
         keys: Mapping[str, str] | None = None,
         takers: Callable[[str], list[str]] | None = None) -> dict[str, Any]:
    """Every option of a component: those ``given`` (None: not given) checked, the others at
    their defaults, in the declared order.

    ``component`` names the component in errors (``model.prior=mog``); ``keys`` maps a given
    option to the key the user wrote (``model.prior.components``; default: the option's name);
    ``takers(option)`` lists the other components that declare an option this one does not.
    """
    keys = keys or {}
    for name in given:
        if name not in specs:
            key = keys.get(name, name)
            others = takers(name) if takers is not None else []
            where = (f"it is an option of {' / '.join(others)}" if others else
                     f"the options of {component}: {', '.join(specs)}" if specs else
                     f"{component} takes no options")
            raise PyrovaeError(f"{key} does not apply to {component} ({where}): remove it")
    filled = {}
    for name, option in specs.items():
        value = given.get(name)
        if value is None:
            filled[name] = option.check(option.default, f"the default of {name}")
        else:
            filled[name] = option.check(value, keys.get(name, name))
    return filled


def checked(component: object, **values: Any) -> dict[str, Any]:
    """``values`` (a component's own ``__init__`` arguments) checked against the options its
    class declares, as :func:`fill` checks them: a component constructed directly, not through
    its registry's builder, gets the same one-line errors."""
    cls = type(component)
    return fill({k: o for k, o in cls.options.items() if k in values}, values, cls.__name__)


def label(component: object) -> str:
    """A component in messages: its registered name, else the name of its class."""
    if isinstance(component, str):
        return component
    cls = component if isinstance(component, type) else type(component)
    return cls.__name__


def aliases(specs: Specs) -> dict[str, str]:
    """flat key -> option name, for one component."""
    return {option.key(name): name for name, option in specs.items()}


def route(flat: Mapping[str, Any], chosen: Mapping[str, tuple[str, Specs]],
          registries: Mapping[str, Mapping[str, Specs]], prefix: str = "",
          ) -> dict[str, dict[str, Any]]:
    """Flat options, each sent to the chosen component that declares it as an alias.

    ``chosen`` maps each kind (``prior``, ...) to (its label, its options), ``registries`` each
    kind to the options of every registered component (to say which take an option). Returns
    kind -> {option name: value}; values that are None are left out (not given). A flat key that
    no chosen component declares, or that two do, is a one-line error.
    """
    routed: dict[str, dict[str, Any]] = {kind: {} for kind in chosen}
    for key, value in flat.items():
        if value is None:
            continue
        takers = [kind for kind, (_, specs) in chosen.items() if key in aliases(specs)]
        if len(takers) > 1:
            raise PyrovaeError(
                f"{prefix}{key} is an option of {' and '.join(chosen[k][0] for k in takers)}: "
                f"write {' or '.join(f'{prefix}{k}.{aliases(chosen[k][1])[key]}' for k in takers)}"
            )
        if not takers:
            where = [f"{prefix}{kind}={name}" for kind, registry in registries.items()
                     for name, specs in registry.items() if key in aliases(specs)]
            now = ", ".join(f"{prefix}{kind}={label}" for kind, (label, _) in chosen.items())
            raise PyrovaeError(
                f"{prefix}{key} does not apply to {now} (it is an option of "
                f"{' / '.join(where) or 'no component'}): remove it"
            )
        kind = takers[0]
        routed[kind][aliases(chosen[kind][1])[key]] = value
    return routed


def known_aliases(registries: Mapping[str, Mapping[str, Specs]]) -> set[str]:
    """Every flat key that some registered component declares."""
    return {key for registry in registries.values() for specs in registry.values()
            for key in aliases(specs)}
