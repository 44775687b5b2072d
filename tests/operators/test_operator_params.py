"""Typed operator parameters: a bad operator table fails at load_config in one line."""

import pytest

from qd_llm.config import load_config
from qd_llm.errors import QdLlmError
from qd_llm.operators.params import BUILTIN_SIGNATURES, OPERATORS

TIES = "operators.ties.parents=2"
# (overrides, how the one-line message starts after "config key ")
BAD = [
    ([TIES, "operators.ties.density=2"], "'operators.ties.density': must be in (0, 1], got 2"),
    (
        ["operators.slerp.densty=0.3"],
        "'operators.slerp.densty': unknown parameter; valid: parents, t",
    ),
    (['operators.slerp.t="half"'], "'operators.slerp.t': must be a number, got 'half'"),
    (["operators.slerp.parents=3"], "'operators.slerp.parents': this operator takes exactly 2"),
    (["operators.ties.parents=1"], "'operators.ties.parents': this operator takes at least 2"),
    (["operators.linear.weights=[1, 2, 3]"], "'operators.linear.weights': needs one number per"),
    (['operators.linear.weights=["a", "b"]'], "'operators.linear.weights': must be a list of"),
    (['operators.dare.combine="mean"'], "'operators.dare.combine': must be one of linear, ties"),
    (["operators.dare.drop_prob=1.0"], "'operators.dare.drop_prob': must be in [0, 1), got 1.0"),
    (["operators.gaussian.scale=true"], "'operators.gaussian.scale': must be a number, got True"),
    (
        ["operators.svd_mutation.scale=-0.1"],
        "'operators.svd_mutation.scale': must be >= 0, got -0.1",
    ),
    (['operators.linear.parents="two"'], "'operators.linear.parents': must be an integer >= 1"),
    (["operators.tiez.parents=2"], "'operators.tiez': unknown operator; known: dare, gaussian"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[o[-1] for o, _ in BAD])
def test_bad_operator_parameter_fails_at_load_in_one_line(overrides, message):
    with pytest.raises(QdLlmError) as excinfo:
        load_config(overrides=overrides)
    text = str(excinfo.value)
    assert text.startswith(f"config key {message}")
    assert "\n" not in text


def test_good_values_at_the_edges_load():
    config = load_config(
        overrides=[
            'operators={"ties": {"parents": 3, "density": 1, "weights": [1, 2, 0.5]},'
            ' "dare": {"parents": 2, "drop_prob": 0, "combine": "ties"},'
            ' "slerp": {"parents": 2, "t": 1.0}, "gaussian": {"scale": 0}}'
        ]
    )
    assert config.operators["ties"]["density"] == 1


def test_every_builtin_operator_declares_its_signature():
    assert set(BUILTIN_SIGNATURES) == set(OPERATORS.names())
    from qd_llm.operators import get_operator

    for name, signature in BUILTIN_SIGNATURES.items():
        assert get_operator(name).signature is signature
