import pytest
import torch

from qd_llm.errors import QdLlmError
from qd_llm.operators import Operator, get_operator, operator_names, register_operator

from ._adapters import random_adapter


def test_builtin_operators_are_registered():
    assert set(operator_names()) >= {"linear", "ties", "dare", "slerp", "svd_mutation", "gaussian"}


def test_unknown_operator_lists_valid_names():
    with pytest.raises(QdLlmError, match=r"unknown operator 'tiez'; valid operators: .*ties"):
        get_operator("tiez")


def test_unknown_parameter_is_rejected_before_any_math():
    with pytest.raises(QdLlmError, match=r"no parameter\(s\) \['densty'\]; valid: \['density'"):
        get_operator("ties")([random_adapter(0, 2), random_adapter(1, 2)], rank=4, densty=0.3)


@pytest.mark.parametrize(
    ("name", "num_parents"), [("slerp", 3), ("slerp", 1), ("ties", 1), ("svd_mutation", 2)]
)
def test_wrong_parent_count_is_rejected(name, num_parents):
    parents = [random_adapter(i, 2) for i in range(num_parents)]
    with pytest.raises(QdLlmError, match=f"operator '{name}' takes at least"):
        get_operator(name)(parents, rank=4)


def test_bad_weights_and_rank_are_rejected():
    parents = [random_adapter(0, 2), random_adapter(1, 2)]
    with pytest.raises(QdLlmError, match="got 3 weights for 2 parents"):
        get_operator("linear")(parents, rank=4, weights=[1, 2, 3])
    with pytest.raises(QdLlmError, match="target rank must be at least 1"):
        get_operator("linear")(parents, rank=0)


def test_duplicate_registration_fails():
    with pytest.raises(ValueError, match="already registered"):

        @register_operator("linear")
        class Again(Operator):
            pass


def test_parents_with_different_layer_shapes_are_rejected():
    first, second = random_adapter(0, 2), random_adapter(1, 2)
    name = next(iter(second))
    second[name] = type(second[name])(A=torch.zeros(2, 5), B=torch.zeros(7, 2))
    with pytest.raises(QdLlmError, match=f"parents disagree on the shape of {name}"):
        get_operator("linear")([first, second], rank=4)
