"""Typed operator parameters, and the operator registry, without importing torch.

Each operator declares its hyper-parameters as :class:`Param` definitions (name,
type, default, allowed range or choices, meaning; after mergekit's
``ConfigParameterDef``) in an :class:`OperatorSignature`, together with how many
parents it takes. :func:`check_operator_table` checks a config's operator table
against it when the config loads, so a bad value is one line before anything runs.

The built-in operators are declared here by name and ``"module:attr"`` (their
classes need torch and are imported on first use); a third-party operator class
registered with :func:`~qd_llm.operators.registry.register_operator` carries its
own ``signature``.
"""

import dataclasses
from collections.abc import Mapping

from qd_llm.errors import QdLlmError
from qd_llm.registry import Registry

OPERATORS = Registry("operator")

# What a parameter's value may be, and how a message names it.
_KINDS = {
    "number": "a number",
    "integer": "an integer",
    "string": "a string",
    "per-parent numbers": "a list of numbers, one per parent",
}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Param:
    """One hyper-parameter of an operator.

    Attributes:
        name: The key in the operator's config table and the keyword of its methods.
        kind: ``number``, ``integer``, ``string`` or ``per-parent numbers``
            (a list with one number per parent).
        default: The value when the key is absent (None: the operator's own default).
        meaning: One line saying what it does.
        low: Smallest allowed value (numbers), or None.
        high: Largest allowed value (numbers), or None.
        bounds: Whether ``low`` and ``high`` are included: ``[]``, ``[)``, ``(]`` or ``()``.
        choices: Allowed values (strings); empty: any.
    """

    name: str
    kind: str
    default: object
    meaning: str
    low: float | None = None
    high: float | None = None
    bounds: str = "[]"
    choices: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"parameter kind must be one of {tuple(_KINDS)}, got {self.kind!r}")
        if self.bounds not in ("[]", "[)", "(]", "()"):
            raise ValueError(f"bounds must be [], [), (] or (), got {self.bounds!r}")

    def problem(self, value, num_parents: int) -> str | None:
        """Why ``value`` is not allowed with ``num_parents`` parents, or None if it is."""
        if value is None and self.default is None:
            return None
        if self.kind == "per-parent numbers":
            if not isinstance(value, list | tuple) or not all(_is_number(v) for v in value):
                return f"must be {_KINDS[self.kind]}, got {value!r}"
            if len(value) != num_parents:
                return f"needs one number per parent ({num_parents}), got {len(value)}"
            return None
        fits = {
            "number": _is_number(value),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "string": isinstance(value, str),
        }[self.kind]
        if not fits:
            return f"must be {_KINDS[self.kind]}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if not self._in_range(value):
            return f"must be {self.range_text()}, got {value!r}"
        return None

    def _in_range(self, value) -> bool:
        if not _is_number(value):
            return True
        above = self.low is None or (
            value >= self.low if self.bounds[0] == "[" else value > self.low
        )
        below = self.high is None or (
            value <= self.high if self.bounds[1] == "]" else value < self.high
        )
        return above and below

    def range_text(self) -> str:
        """The allowed range: an interval (``in (0, 1]``) or one bound (``>= 0``)."""
        if self.high is None:
            return f"{'>=' if self.bounds[0] == '[' else '>'} {self.low:g}"
        if self.low is None:
            return f"{'<=' if self.bounds[1] == ']' else '<'} {self.high:g}"
        return f"in {self.bounds[0]}{self.low:g}, {self.high:g}{self.bounds[1]}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorSignature:
    """What an operator accepts: how many parents and which parameters.

    Attributes:
        min_parents: Fewest parents.
        max_parents: Most parents (None: no limit).
        params: The hyper-parameters (``parents`` is not one of them).
    """

    min_parents: int = 1
    max_parents: int | None = None
    params: tuple[Param, ...] = ()

    def param_names(self) -> tuple[str, ...]:
        """Names of the hyper-parameters, in declaration order."""
        return tuple(p.name for p in self.params)

    def parents_problem(self, num_parents: int) -> str | None:
        """Why ``num_parents`` parents are not allowed, or None if they are."""
        if self.min_parents <= num_parents and (
            self.max_parents is None or num_parents <= self.max_parents
        ):
            return None
        if self.max_parents == self.min_parents:
            allowed = f"exactly {self.min_parents}"
        elif self.max_parents is None:
            allowed = f"at least {self.min_parents}"
        else:
            allowed = f"{self.min_parents} to {self.max_parents}"
        return f"this operator takes {allowed} parents, got {num_parents}"


_WEIGHTS = Param(
    name="weights",
    kind="per-parent numbers",
    default=None,
    meaning="one weight per parent; default equal weights",
)
_SCALE = "noise level ε"

BUILTIN_SIGNATURES: dict[str, OperatorSignature] = {
    "linear": OperatorSignature(min_parents=1, params=(_WEIGHTS,)),
    "ties": OperatorSignature(
        min_parents=2,
        params=(
            _WEIGHTS,
            Param(
                name="density",
                kind="number",
                default=0.5,
                meaning="fraction of entries kept per update",
                low=0.0,
                high=1.0,
                bounds="(]",
            ),
        ),
    ),
    "dare": OperatorSignature(
        min_parents=1,
        params=(
            _WEIGHTS,
            Param(
                name="drop_prob",
                kind="number",
                default=0.5,
                meaning="probability of dropping each entry",
                low=0.0,
                high=1.0,
                bounds="[)",
            ),
            Param(
                name="combine",
                kind="string",
                default="linear",
                meaning="how the rescaled updates are combined",
                choices=("linear", "ties"),
            ),
        ),
    ),
    "slerp": OperatorSignature(
        min_parents=2,
        max_parents=2,
        params=(
            Param(
                name="t",
                kind="number",
                default=0.5,
                meaning="interpolation position (0: first parent, 1: second)",
                low=0.0,
                high=1.0,
            ),
        ),
    ),
    "svd_mutation": OperatorSignature(
        min_parents=1,
        max_parents=1,
        params=(Param(name="scale", kind="number", default=0.1, meaning=_SCALE, low=0.0),),
    ),
    "gaussian": OperatorSignature(
        min_parents=1,
        max_parents=1,
        params=(Param(name="scale", kind="number", default=0.01, meaning=_SCALE, low=0.0),),
    ),
}

for _name, _target in {
    "linear": "qd_llm.operators.linear:Linear",
    "ties": "qd_llm.operators.ties:Ties",
    "dare": "qd_llm.operators.dare:Dare",
    "slerp": "qd_llm.operators.slerp:Slerp",
    "svd_mutation": "qd_llm.operators.mutation:SvdMutation",
    "gaussian": "qd_llm.operators.mutation:GaussianMutation",
}.items():
    OPERATORS.register_lazy(_name, _target)


def operator_signature(name: str) -> OperatorSignature:
    """The signature of operator ``name``; a built-in's is read without importing torch.

    Raises:
        QdLlmError: No operator has that name (the message lists the known ones).
    """
    if name in OPERATORS and name in BUILTIN_SIGNATURES:
        return BUILTIN_SIGNATURES[name]
    return OPERATORS.get(name).signature


def check_operator_table(name: str, table: object) -> None:
    """Checks one ``operators.NAME`` config table: the operator, ``parents`` and every parameter.

    Raises:
        QdLlmError: One line naming the first bad key (``config key 'operators.ties.density':
            must be in (0, 1], got 2``).
    """
    key = f"operators.{name}"
    if name not in OPERATORS:
        raise QdLlmError(
            f"config key '{key}': unknown operator; known: {', '.join(OPERATORS.names())}"
        )
    if not isinstance(table, Mapping):
        raise QdLlmError(f"config key '{key}': must be a table of parameters, got {table!r}")
    signature = operator_signature(name)
    num_parents = table.get("parents", 1)
    if not isinstance(num_parents, int) or isinstance(num_parents, bool) or num_parents < 1:
        raise QdLlmError(
            f"config key '{key}.parents': must be an integer >= 1, got {num_parents!r}"
        )
    problem = signature.parents_problem(num_parents)
    if problem:
        raise QdLlmError(f"config key '{key}.parents': {problem}")
    params = {p.name: p for p in signature.params}
    for param_name, value in table.items():
        if param_name == "parents":
            continue
        if param_name not in params:
            valid = ", ".join(("parents", *params))
            raise QdLlmError(f"config key '{key}.{param_name}': unknown parameter; valid: {valid}")
        problem = params[param_name].problem(value, num_parents)
        if problem:
            raise QdLlmError(f"config key '{key}.{param_name}': {problem}")
