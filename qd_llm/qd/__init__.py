"""Quality-diversity pieces: the genome archive, DNS selection, skill descriptors, emitters.

:func:`genome_archive` makes a pyribs Grid or CVT archive whose solutions are
genome ids; :class:`NicheMap` is the loop's, keeping the best genome per niche
of the skill-descriptor space (:class:`SkillDescriptors`, a projection of
per-task skill vectors); :func:`dns_select` keeps a population diverse by
dominated novelty search; :class:`OperatorEmitter` is a pyribs emitter that
breeds children (:func:`breed`, recorded as :class:`Recipe`) and returns their
genome ids, so it runs under ``ribs.schedulers.Scheduler``; the loop's
:class:`OperatorBandit` spreads each generation's children over them by UCB1.
Names are imported on first use.
"""

from qd_llm._lazy import lazy_exports

_EXPORTS = {
    "Elite": "qd_llm.qd.niche_map",
    "NicheMap": "qd_llm.qd.niche_map",
    "genome_archive": "qd_llm.qd.niche_map",
    "SkillDescriptors": "qd_llm.qd.descriptors",
    "difficulty_weights": "qd_llm.qd.dns",
    "dns_distances": "qd_llm.qd.dns",
    "dns_scores": "qd_llm.qd.dns",
    "dns_select": "qd_llm.qd.dns",
    "ArchiveParents": "qd_llm.qd.emitters",
    "PARENT_SELECTIONS": "qd_llm.qd.selection",
    "SURVIVOR_SELECTIONS": "qd_llm.qd.selection",
    "PopulationParents": "qd_llm.qd.emitters",
    "breed": "qd_llm.qd.emitters",
    "OperatorBandit": "qd_llm.qd.emitters",
    "OperatorEmitter": "qd_llm.qd.emitters",
    "OperatorStats": "qd_llm.qd.emitters",
    "Recipe": "qd_llm.qd.emitters",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
