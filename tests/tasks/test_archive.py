"""The task archive with the real MiniLM embedder."""

import json
import pickle

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from qd_llm.errors import QdLlmError
from qd_llm.models.resolve import resolve_embedder
from qd_llm.tasks.archive import (
    TaskArchive,
    task_text,
    threshold_from_similarity_cap,
    vendi_score,
)
from qd_llm.tasks.taskdir import Lineage, TaskInfo, write_task

SPECS = {
    "add_three_digit": ("Add two three-digit integers and report their sum.", "arithmetic"),
    "sum_three_digit": ("Add two 3-digit whole numbers and give the sum.", "arithmetic"),
    "french_translation": ("Translate a short English sentence into French.", "translation"),
    "ocean_haiku": ("Write a haiku about the ocean with a 5-7-5 pattern.", "creative writing"),
    "sort_words": ("Sort a list of words alphabetically, comma separated.", "string handling"),
    "capital_cities": ("Name the capital city of a given country.", "world knowledge"),
}
DISTINCT = ["add_three_digit", "french_translation", "ocean_haiku", "sort_words", "capital_cities"]


class CountingEmbedder:
    """The real MiniLM model, counting how many texts it was asked to embed."""

    def __init__(self, model):
        self.model = model
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts.extend(texts)
        return self.model.encode(texts, normalize_embeddings=True)


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformer(resolve_embedder(), device="cpu")


@pytest.fixture
def tasks(tmp_path):
    return {
        name: write_task(
            tmp_path,
            task_id=name,
            code="class TaskFamily: pass\n",
            info=TaskInfo(name=name, description=description, capability=capability),
            lineage=Lineage(),
        )
        for name, (description, capability) in SPECS.items()
    }


def test_near_duplicates_are_rejected_and_distinct_tasks_accepted(minilm, tasks):
    archive = TaskArchive(embedder=minilm, k=1, threshold=threshold_from_similarity_cap(0.7))
    first = archive.consider(tasks["add_three_digit"], generation=0)
    duplicate = archive.consider(tasks["sum_three_digit"], generation=0)
    distinct = archive.consider(tasks["french_translation"], generation=0)

    assert first.accepted and first.novelty == pytest.approx(0.3)  # empty pool: the threshold
    assert not duplicate.accepted
    assert duplicate.novelty < 0.3
    assert "nearest: add_three_digit" in duplicate.reason
    assert distinct.accepted and distinct.novelty > 0.5
    assert [t.task_id for t in archive.active()] == ["add_three_digit", "french_translation"]


def test_candidates_in_one_batch_are_compared_with_each_other(minilm, tasks):
    archive = TaskArchive(embedder=minilm, k=1, threshold=0.3)
    names = ["add_three_digit", "sum_three_digit", "ocean_haiku"]
    decisions = archive.consider_many([tasks[n] for n in names], generation=1)
    assert [d.accepted for d in decisions] == [True, False, True]
    assert archive.consider(tasks["add_three_digit"], generation=2).reason == (
        "task id add_three_digit already in history"
    )


def test_novelty_is_the_mean_cosine_distance_to_the_k_nearest(minilm, tasks):
    archive = TaskArchive(embedder=minilm, k=2, threshold=0.0)
    archive.consider_many([tasks[n] for n in DISTINCT[:4]], generation=0)
    candidate = tasks["capital_cities"]
    pool = archive.embeddings([t.task_id for t in archive.active()])
    distances = np.sort(1.0 - pool @ archive.embed([candidate])[0])
    novelty, nearest = archive.novelty(candidate)
    assert novelty == pytest.approx(distances[:2].mean())
    assert len(nearest) == 2
    direct = minilm.encode([task_text(candidate.info)], normalize_embeddings=True)[0]
    np.testing.assert_allclose(archive.embeddings(["capital_cities"])[0], direct, atol=1e-5)


def test_cap_evicts_the_oldest_but_history_keeps_everything(minilm, tasks):
    archive = TaskArchive(embedder=minilm, k=1, threshold=0.3, capacity=2)
    decisions = [archive.consider(tasks[n], generation=g) for g, n in enumerate(DISTINCT[:3])]
    assert [d.evicted for d in decisions] == [(), (), ("add_three_digit",)]
    assert [t.task_id for t in archive.active()] == ["french_translation", "ocean_haiku"]
    assert [t.task_id for t in archive.history()] == DISTINCT[:3]
    assert archive.accepted_at("ocean_haiku") == 2

    archive.remove("french_translation")
    assert [t.task_id for t in archive.active()] == ["ocean_haiku"]
    assert len(archive.history()) == 3
    with pytest.raises(QdLlmError, match="not in the active pool"):
        archive.remove("french_translation")
    # An evicted task no longer counts against novelty: its near-duplicate is accepted now.
    assert archive.consider(tasks["sum_three_digit"], generation=3).accepted


def test_interesting_hook_sees_candidate_and_nearest_and_can_reject(minilm, tasks):
    calls = []

    def only_non_arithmetic(candidate, nearest):
        calls.append((candidate.name, [info.name for info in nearest]))
        return candidate.capability != "arithmetic"

    archive = TaskArchive(embedder=minilm, k=2, threshold=0.3, is_interesting=only_non_arithmetic)
    decisions = archive.consider_many(
        [tasks["ocean_haiku"], tasks["add_three_digit"], tasks["sort_words"]], generation=0
    )
    assert [d.accepted for d in decisions] == [True, False, True]
    assert decisions[1].reason.startswith("judged not interesting")
    assert calls[0] == ("ocean_haiku", [])
    assert calls[1] == ("add_three_digit", ["ocean_haiku"])
    assert calls[2][0] == "sort_words" and calls[2][1] == ["ocean_haiku"]


def test_nothing_is_embedded_twice(minilm, tasks):
    embedder = CountingEmbedder(minilm)
    archive = TaskArchive(embedder=embedder, k=1, threshold=0.3)
    archive.consider_many([tasks[n] for n in DISTINCT], generation=0)
    archive.consider(tasks["sum_three_digit"], generation=1)
    archive.novelty(tasks["sum_three_digit"])
    archive.vendi_score()
    assert len(embedder.texts) == len(DISTINCT) + 1
    assert len(set(embedder.texts)) == len(embedder.texts)


def test_vendi_score_counts_effectively_distinct_tasks(minilm, tasks):
    archive = TaskArchive(embedder=minilm, k=1, threshold=0.3)
    archive.consider_many([tasks[n] for n in DISTINCT], generation=0)
    one = archive.embeddings(["ocean_haiku"])
    assert vendi_score(np.repeat(one, 5, axis=0)) == pytest.approx(1.0, abs=1e-6)
    assert vendi_score(np.eye(5)) == pytest.approx(5.0)
    assert 3.5 < archive.vendi_score() <= 5.0
    assert vendi_score(np.zeros((0, 384))) == 0.0


def test_state_round_trips_through_json_and_pickle(minilm, tasks):
    archive = TaskArchive(embedder=minilm, k=2, threshold=0.3, capacity=3)
    archive.consider_many([tasks[n] for n in DISTINCT[:4]], generation=4)
    archive.consider(tasks["sum_three_digit"], generation=5)
    state = json.loads(json.dumps(archive.state_dict()))
    assert pickle.loads(pickle.dumps(state)) == state

    embedder = CountingEmbedder(minilm)
    restored = TaskArchive.from_state_dict(state, embedder=embedder)
    assert [t.task_id for t in restored.active()] == [t.task_id for t in archive.active()]
    assert [t.info for t in restored.history()] == [t.info for t in archive.history()]
    assert restored.accepted_at("add_three_digit") == 4
    assert restored.vendi_score() == pytest.approx(archive.vendi_score())
    assert restored.state_dict() == state
    # A run directory that was moved finds its tasks in their new folder.
    moved = TaskArchive.from_state_dict(state, embedder=minilm, tasks_root="/moved/run/tasks")
    assert {str(t.path) for t in moved.history()} == {
        f"/moved/run/tasks/{t.task_id}" for t in archive.history()
    }
    candidate = tasks["capital_cities"]
    again, before = (
        restored.consider(candidate, generation=6),
        archive.consider(candidate, generation=6),
    )
    assert (again.accepted, again.evicted) == (before.accepted, before.evicted)
    assert again.novelty == pytest.approx(before.novelty, abs=1e-6)
    assert embedder.texts == [task_text(candidate.info)]  # only the new task was embedded


def test_invalid_settings_are_refused(minilm):
    with pytest.raises(QdLlmError, match="k must be at least 1"):
        TaskArchive(embedder=minilm, k=0)
    with pytest.raises(QdLlmError, match="cosine distance in"):
        TaskArchive(embedder=minilm, threshold=2.5)
    with pytest.raises(QdLlmError, match="capacity must be at least 1"):
        TaskArchive(embedder=minilm, capacity=0)
