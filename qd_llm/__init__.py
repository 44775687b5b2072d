"""qd_llm: quality-diversity discovery of complementary LLM experts (AC/DC).

The names below are what a researcher composes; each is imported from its
subpackage the first time it is read, so ``import qd_llm`` stays cheap and
never imports torch. Example (a short run, then its niche elites)::

    import qd_llm

    config = qd_llm.load_config(preset="demo", overrides=["population.generations=2"])
    run = qd_llm.RunDir.create("archives/short", config.to_dict())
    loop = qd_llm.Coevolution(config, run)
    try:
        loop.run()
    finally:
        loop.close()
    print([elite.genome_id for elite in qd_llm.RunSnapshot(run.path).elites()])

Layers, lowest first (enforced by ``lint-imports``, see ``pyproject.toml``):
weights and the genome store (:mod:`qd_llm.models`), run files
(:mod:`qd_llm.runs`); :mod:`qd_llm.operators`; :mod:`qd_llm.inference`,
:mod:`qd_llm.tasks` and :mod:`qd_llm.qd`; :mod:`qd_llm.seeding`,
:mod:`qd_llm.snapshot` and :mod:`qd_llm.config`; :mod:`qd_llm.evaluation`;
:mod:`qd_llm.components` (builds a run's parts from its config); the loop
(:mod:`qd_llm.loop`); plots, report and export; the command line.
"""

from qd_llm._lazy import lazy_exports
from qd_llm.errors import QdLlmError

__version__ = "0.1.0"

_EXPORTS = {
    # Configuration and run directories.
    "RunConfig": "qd_llm.config",
    "config_from_dict": "qd_llm.config",
    "load_config": "qd_llm.config",
    "read_config_file": "qd_llm.config",
    "RunDir": "qd_llm.runs",
    "RunSnapshot": "qd_llm.snapshot",
    "Registry": "qd_llm.registry",
    # The loop and the components it is built from.
    "Coevolution": "qd_llm.loop",
    "components": "qd_llm.components",
    # Genomes.
    "GenomeInfo": "qd_llm.models.genome",
    "GenomeStore": "qd_llm.models.genome",
    "LoraFactors": "qd_llm.models.lora",
    "seed_expert_folders": "qd_llm.seeding",
    # Operators (the package registers the built-in ones when imported).
    "ElementwiseOperator": "qd_llm.operators",
    "Operator": "qd_llm.operators",
    "breed_full": "qd_llm.operators",
    "get_operator": "qd_llm.operators",
    "operator_names": "qd_llm.operators",
    "OperatorSignature": "qd_llm.operators.params",
    "Param": "qd_llm.operators.params",
    "register_operator": "qd_llm.operators",
    # Inference backends.
    "Backend": "qd_llm.inference.base",
    "GenerationConfig": "qd_llm.inference.base",
    "GenerationRequest": "qd_llm.inference.base",
    "HFBackend": "qd_llm.inference.hf",
    "OpenAIBackend": "qd_llm.inference.openai_backend",
    "VLLMBackend": "qd_llm.inference.vllm_backend",
    "make_backend": "qd_llm.inference.registry",
    # Tasks, scientists and the sandbox.
    "LLMScientist": "qd_llm.tasks.llm_scientist",
    "ProceduralScientist": "qd_llm.tasks.procedural",
    "SandboxConfig": "qd_llm.tasks.sandbox",
    "SandboxPool": "qd_llm.tasks.sandbox",
    "Scientist": "qd_llm.tasks.scientist",
    "TaskArchive": "qd_llm.tasks.archive",
    "TaskDir": "qd_llm.tasks.taskdir",
    "TaskRejected": "qd_llm.tasks.scientist",
    "TaskRequest": "qd_llm.tasks.scientist",
    "register_scientist": "qd_llm.tasks.scientist",
    # Evaluation.
    "Evaluator": "qd_llm.evaluation.evaluate",
    "HeldOutTracker": "qd_llm.evaluation.heldout",
    "split_tasks": "qd_llm.evaluation.heldout",
    "make_picker": "qd_llm.evaluation.bestofn",
    # Quality diversity: genome archive, niche map, DNS, descriptors, emitters.
    "Elite": "qd_llm.qd.niche_map",
    "NicheMap": "qd_llm.qd.niche_map",
    "genome_archive": "qd_llm.qd.niche_map",
    "ArchiveParents": "qd_llm.qd.emitters",
    "PopulationParents": "qd_llm.qd.emitters",
    "breed": "qd_llm.qd.emitters",
    "OperatorBandit": "qd_llm.qd.emitters",
    "OperatorEmitter": "qd_llm.qd.emitters",
    "Recipe": "qd_llm.qd.emitters",
    "SkillDescriptors": "qd_llm.qd.descriptors",
    "dns_select": "qd_llm.qd.dns",
    # Exporting elites.
    "export_elites": "qd_llm.export",
}
__all__ = ["QdLlmError", "__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
