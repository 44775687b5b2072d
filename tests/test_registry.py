"""Registries: decorator and lazy names, one-line errors, plugins, torch-free config loading."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qd_llm.errors import QdLlmError
from qd_llm.registry import Registry

ROOT = Path(__file__).parents[1]


def test_decorator_registers_and_unknown_names_are_listed_in_one_line():
    pickers = Registry("picker")

    @pickers.register("first")
    class First:
        pass

    pickers.register_lazy("path", "pathlib:PurePosixPath")
    assert pickers.get("first") is First
    assert pickers.names() == ("first", "path")
    with pytest.raises(QdLlmError, match=r"^unknown picker 'frist'; valid pickers: first, path$"):
        pickers.get("frist")


def test_an_unregistered_name_is_gone_and_cannot_be_removed_twice():
    things = Registry("thing")
    things.register("kept")(int)
    things.register("dropped")(str)
    things.unregister("dropped")
    assert things.names() == ("kept",)
    with pytest.raises(QdLlmError, match=r"^unknown thing 'dropped'; nothing to unregister$"):
        things.unregister("dropped")


def test_lazy_name_is_imported_on_first_lookup_only():
    things = Registry("thing")
    things.register_lazy("wave", "wave:open")  # a stdlib module nothing here imports
    sys.modules.pop("wave", None)
    assert "wave" in things.names() and "wave" not in sys.modules
    import wave

    assert things.get("wave") is wave.open


def test_a_name_cannot_be_taken_twice_but_its_lazy_target_fulfils_it():
    things = Registry("thing")
    things.register_lazy("registry", "qd_llm.registry:Registry")
    things.register("registry")(Registry)  # the declared class itself: fine
    with pytest.raises(ValueError, match="thing 'registry' is already registered"):
        things.register("registry")(dict)
    with pytest.raises(ValueError, match="must be 'module:attr'"):
        things.register_lazy("bad", "no_colon")


def _python(code: str, *, path: Path | None = None) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (entry points and sys.modules start clean)."""
    env_path = [str(ROOT)] + ([str(path)] if path else [])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={"PYTHONPATH": ":".join(env_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_loading_a_config_with_operators_does_not_import_torch():
    done = _python(
        """
        import sys
        from qd_llm.config import load_config
        table = '{"ties": {"parents": 3, "density": 0.3}, "slerp": {"parents": 2}}'
        config = load_config(preset="paper", overrides=["operators=" + table])
        assert config.operators["ties"]["density"] == 0.3
        print(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _plugin(tmp_path: Path, module_code: str) -> Path:
    """An installed distribution whose ``qd_llm.plugins`` entry point is ``module_code``."""
    dist_info = tmp_path / "qd_llm_test_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: qd-llm-test-plugin\n")
    (dist_info / "entry_points.txt").write_text("[qd_llm.plugins]\nmine = qd_llm_test_plugin\n")
    (tmp_path / "qd_llm_test_plugin.py").write_text(textwrap.dedent(module_code))
    return tmp_path


def test_a_plugin_registers_a_scientist_and_an_operator_that_configs_may_name(tmp_path):
    path = _plugin(
        tmp_path,
        """
        from qd_llm.operators import Operator, OperatorSignature, Param, register_operator
        from qd_llm.tasks.scientist import Scientist, register_scientist

        @register_scientist("plugged")
        class Plugged(Scientist):
            def propose(self, request, out_root):
                raise NotImplementedError

        @register_operator("first_parent")
        class FirstParent(Operator):
            signature = OperatorSignature(
                min_parents=1,
                params=(Param(name="gain", kind="number", default=1.0, meaning="x", high=2.0),),
            )

            def apply_layer(self, layers, *, rank, generator, gain=1.0):
                return layers[0].__class__(A=layers[0].A, B=gain * layers[0].B)
        """,
    )
    done = _python(
        """
        import torch
        from qd_llm.config import load_config
        from qd_llm.errors import QdLlmError
        from qd_llm.models.lora import LoraFactors
        from qd_llm.operators import get_operator
        from qd_llm.tasks.scientist import SCIENTISTS

        config = load_config(
            overrides=["tasks.scientist=plugged", 'operators={"first_parent": {"gain": 0.5}}']
        )
        print(config.tasks.scientist, SCIENTISTS.get("plugged").name)
        try:
            load_config(overrides=['operators={"first_parent": {"gain": 3}}'])
        except QdLlmError as e:
            print(e)
        layer = LoraFactors(A=torch.ones(1, 2), B=torch.ones(2, 1))
        child = get_operator("first_parent")([{"m": layer}], rank=1, gain=0.5)
        print(child["m"].B.flatten().tolist())
        """,
        path=path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "plugged plugged",
        "config key 'operators.first_parent.gain': must be <= 2, got 3",
        "[0.5, 0.5]",
    ]


def test_a_broken_plugin_is_one_line_naming_it(tmp_path):
    path = _plugin(tmp_path, "raise RuntimeError('no licence key')\n")
    done = _python(
        """
        from qd_llm.config import load_config
        from qd_llm.errors import QdLlmError
        try:
            load_config()
        except QdLlmError as e:
            print(e)
        """,
        path=path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "qd_llm plugin 'mine' (qd_llm_test_plugin) failed to load: RuntimeError: no licence key"
    )


def test_selections_and_pickers_are_registries():
    from qd_llm.config import load_config
    from qd_llm.evaluation.bestofn import PICKERS, MajorityPicker
    from qd_llm.qd.selection import PARENT_SELECTIONS, SURVIVOR_SELECTIONS

    assert SURVIVOR_SELECTIONS.names() == ("dns", "random")
    assert PARENT_SELECTIONS.names() == ("tournament", "uniform")
    assert PICKERS.get("majority") is MajorityPicker
    assert set(PICKERS.names()) == {"majority", "judge", "knockout", "reward"}
    with pytest.raises(QdLlmError, match=r"'population.selection': must be one of dns, random"):
        load_config(overrides=["population.selection=tournament"])
    with pytest.raises(
        QdLlmError, match=r"'population.parent_selection': must be one of tournament, uniform"
    ):
        load_config(overrides=["population.parent_selection=roulette"])


def test_a_registered_parent_selection_is_named_by_the_config_and_drawn_by_emitters():

    from qd_llm.config import load_config
    from qd_llm.qd import NicheMap, OperatorEmitter, PopulationParents
    from qd_llm.qd.selection import PARENT_SELECTIONS

    @PARENT_SELECTIONS.register("always_first")
    def always_first(pool_size, k, *, rng, fitness):
        return [0] * k

    config = load_config(overrides=["population.parent_selection=always_first"])
    emitter = OperatorEmitter(
        NicheMap().archive,
        operator="linear",
        num_parents=2,
        parents=PopulationParents(["c", "a", "b"]),
        selection=config.population.parent_selection,
        seed=1,
    )
    # The pool is sorted, so index 0 is "a".
    assert {recipe.parents for recipe in emitter.draw(5)} == {("a", "a")}


def test_a_registered_backend_is_named_by_the_config_and_built_from_it():
    from qd_llm import components
    from qd_llm.config import load_config
    from qd_llm.inference.registry import BACKENDS

    @BACKENDS.register("recorded")
    class Recorded:
        def __init__(self, base_model: str):
            self.base_model = base_model

        @classmethod
        def from_config(cls, config):
            return cls(config.base_model)

    config = load_config(overrides=["backend=recorded", "base_model=my-model"])
    backend = components.make_backend(config)
    assert isinstance(backend, Recorded) and backend.base_model == "my-model"
