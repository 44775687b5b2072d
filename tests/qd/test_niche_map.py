from pathlib import Path

import numpy as np
import pytest

from qd_llm.errors import QdLlmError
from qd_llm.qd.descriptors import SkillDescriptors
from qd_llm.qd.niche_map import NicheMap, genome_archive
from qd_llm.runs import Checkpoint, decode_checkpoint, encode_checkpoint


def _through_checkpoint(state: dict) -> dict:
    """``state`` written to checkpoint bytes and read back (pure data, no pickle)."""
    checkpoint = Checkpoint(generation=0, state=state, metrics_bytes=0, evals_bytes=0)
    return decode_checkpoint(encode_checkpoint(checkpoint), source=Path("checkpoint.npz")).state


def _population(n=30, t=10, seed=0):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(t, 16))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    skills = rng.random((n, t)) < rng.uniform(0.1, 0.8, size=(n, 1))
    ids = [f"g{i:03d}" for i in range(n)]
    return ids, skills, skills.mean(axis=1), e


def test_rebuild_keeps_the_fittest_per_cell():
    ids, skills, fitness, e = _population()
    descriptors = SkillDescriptors(dims=2).fit(e)
    niche_map = NicheMap(resolution=5)
    niche_map.rebuild(ids, skills, fitness, descriptors)
    elites = niche_map.elites()
    cells = niche_map.archive.index_of(descriptors.transform(skills))
    for elite in elites:
        in_cell = cells == elite.cell
        assert elite.fitness == fitness[in_cell].max()
        assert fitness[ids.index(elite.genome_id)] == elite.fitness
    assert len(elites) == len(set(cells.tolist())) == len(niche_map)
    assert niche_map.coverage == pytest.approx(len(elites) / 25)
    assert niche_map.qd_score == pytest.approx(sum(e.fitness for e in elites))
    assert [e.fitness for e in elites] == sorted((e.fitness for e in elites), reverse=True)


def test_insert_uses_frozen_weights_and_reports_entries():
    ids, skills, fitness, e = _population()
    descriptors = SkillDescriptors(dims=2).fit(e)
    niche_map = NicheMap(resolution=4)
    niche_map.rebuild(ids[:10], skills[:10], fitness[:10], descriptors)
    before = {el.cell: el for el in niche_map.elites()}
    weights = niche_map.task_weights.copy()
    best = np.ones((1, skills.shape[1]), dtype=bool)
    # The cell "perfect" must land in, from the frozen weights (not refitted ones).
    [cell] = niche_map.archive.index_of(descriptors.transform(best, weights))
    assert niche_map.insert(["perfect"], best, np.array([1.0])) == 1
    assert np.array_equal(niche_map.task_weights, weights)
    after = {el.cell: el for el in niche_map.elites()}
    assert after[cell].genome_id == "perfect" and after[cell].fitness == 1.0
    # Exactly that cell changed: it was new (one more elite) or its elite was replaced.
    assert set(after) == set(before) | {cell}
    others = {c: el.genome_id for c, el in before.items() if c != cell}
    assert {c: el.genome_id for c, el in after.items() if c != cell} == others
    # A worse genome in the same cell does not enter.
    assert niche_map.insert(["worse"], best, np.array([0.5])) == 0


def test_rebuild_after_task_pool_change_recomputes_everything():
    ids, skills, fitness, e = _population()
    niche_map = NicheMap(resolution=5)
    niche_map.rebuild(ids, skills, fitness, SkillDescriptors().fit(e))
    old = {el.genome_id: el.descriptor for el in niche_map.elites()}
    # New pool: only the first 6 tasks survive.
    new_descriptors = SkillDescriptors().fit(e[:6])
    niche_map.rebuild(ids, skills[:, :6], skills[:, :6].mean(axis=1), new_descriptors)
    new = niche_map.elites()
    expected = new_descriptors.transform(skills[:, :6])
    for el in new:
        assert np.allclose(el.descriptor, expected[ids.index(el.genome_id)])
    assert {el.genome_id: el.descriptor.tolist() for el in new} != {
        k: v.tolist() for k, v in old.items()
    }


def _same_content(a: NicheMap, b: NicheMap) -> None:
    # data() follows insertion order, so equal lists mean the same order too.
    da, db = a.archive.data(), b.archive.data()
    assert list(da["solution"]) == list(db["solution"])
    for field in ("index", "objective", "measures", "threshold"):
        assert np.array_equal(da[field], db[field])
    assert (a.qd_score, a.coverage, len(a)) == (b.qd_score, b.coverage, len(b))
    assert a.archive.stats == b.archive.stats


@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_restored_map_continues_exactly_like_the_saved_one(kind):
    ids, skills, fitness, e = _population()
    niche_map = NicheMap(dims=3, kind=kind, resolution=3, cells=20, seed=1)
    niche_map.rebuild(ids[:5], skills[:5], fitness[:5], SkillDescriptors(dims=3).fit(e))
    for i in reversed(range(5, 20)):  # one at a time, as the loop inserts children
        niche_map.insert(ids[i : i + 1], skills[i : i + 1], fitness[i : i + 1])
    niche_map.archive.sample_elites(3)  # moves the archive's own generator
    assert 0 < niche_map.coverage < 1
    cells = niche_map.archive.data("index").tolist()
    assert cells != sorted(cells), "insertion order must differ from cell order to be tested"
    restored = NicheMap.from_state_dict(_through_checkpoint(niche_map.state_dict()))
    _same_content(niche_map, restored)
    if kind == "cvt":
        assert np.array_equal(restored.archive.centroids, niche_map.archive.centroids)
    # Later inserts (frozen projection and weights), sampling and statistics agree.
    for genome_map in (niche_map, restored):
        genome_map.insert(ids[20:], skills[20:], fitness[20:])
    _same_content(niche_map, restored)
    sampled = [m.archive.sample_elites(5)["solution"].tolist() for m in (niche_map, restored)]
    assert sampled[0] == sampled[1]
    assert restored.insert(["new"], np.ones((1, 10), dtype=bool), np.array([1.0])) == 1


def test_an_empty_map_round_trips():
    restored = NicheMap.from_state_dict(_through_checkpoint(NicheMap(resolution=4).state_dict()))
    assert len(restored) == 0 and restored.descriptors is None and restored.archive.cells == 16


def test_saved_content_that_does_not_fit_the_map_is_refused():
    ids, skills, fitness, e = _population()
    niche_map = NicheMap(resolution=3)
    niche_map.rebuild(ids, skills, fitness, SkillDescriptors().fit(e))
    state = niche_map.state_dict()
    state["archive"]["occupied_cells"] = state["archive"]["occupied_cells"] + 9
    with pytest.raises(QdLlmError, match="does not fit a map of 9 cells"):
        NicheMap.from_state_dict(state)


def test_errors():
    with pytest.raises(QdLlmError, match="'grid' or 'cvt'"):
        NicheMap(kind="hex")
    with pytest.raises(RuntimeError, match="rebuild must be called"):
        NicheMap().insert(["a"], np.ones((1, 3), dtype=bool), np.array([1.0]))
    ids, skills, fitness, e = _population()
    with pytest.raises(QdLlmError, match="descriptors have 3 dims; the map has 2"):
        NicheMap().rebuild(ids, skills, fitness, SkillDescriptors(dims=3).fit(e))


@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_genome_archive_follows_ribs_conventions_and_is_drawn_by_ribs_visualize(kind, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ribs.visualize import cvt_archive_heatmap, grid_archive_heatmap

    centroids = np.array([[-0.5, -0.5], [0.5, 0.5], [0.5, -0.5], [-0.5, 0.5]])
    archive = genome_archive(kind=kind, resolution=4, centroids=centroids, seed=1)
    first = archive.add(
        np.array(["g1", "g2"], dtype=object), [0.2, 0.7], [[-0.6, -0.6], [0.6, 0.6]]
    )
    better = archive.add(np.array(["g3"], dtype=object), [0.4], [[-0.55, -0.65]])
    assert first["status"].tolist() == [2, 2] and better["status"].tolist() == [1]  # new, improved
    data = archive.data()
    assert sorted(data["solution"]) == ["g2", "g3"]
    assert set(archive.sample_elites(5)["solution"]) <= {"g2", "g3"}
    (grid_archive_heatmap if kind == "grid" else cvt_archive_heatmap)(archive)
    plt.savefig(tmp_path / "map.png")
    plt.close("all")
    assert (tmp_path / "map.png").stat().st_size > 0
