"""Quality-diversity pieces: the niche map, DNS selection, skill descriptors, emitters.

:class:`NicheMap` keeps the best genome per niche of the skill-descriptor
space (:class:`SkillDescriptors`, a projection of per-task skill vectors);
:func:`dns_select` keeps a population diverse by dominated novelty search;
:class:`OperatorBandit` chooses merge and mutation operators
(:class:`OperatorEmitter`) and emits :class:`Recipe` objects for the loop to
breed. Names are imported on first use.
"""

from qd_llm._lazy import lazy_exports

_EXPORTS = {
    "Elite": "qd_llm.qd.niche_map",
    "NicheMap": "qd_llm.qd.niche_map",
    "SkillDescriptors": "qd_llm.qd.descriptors",
    "difficulty_weights": "qd_llm.qd.dns",
    "dns_distances": "qd_llm.qd.dns",
    "dns_scores": "qd_llm.qd.dns",
    "dns_select": "qd_llm.qd.dns",
    "OperatorBandit": "qd_llm.qd.emitters",
    "OperatorEmitter": "qd_llm.qd.emitters",
    "OperatorStats": "qd_llm.qd.emitters",
    "Recipe": "qd_llm.qd.emitters",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
