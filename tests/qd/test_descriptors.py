import numpy as np
import pytest

from qd_llm.errors import QdLlmError
from qd_llm.qd.descriptors import SkillDescriptors


def _unit_embeddings(t=8, d=12, seed=0):
    e = np.random.default_rng(seed).normal(size=(t, d))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_skill_embedding_is_difficulty_weighted_mean_of_solved_tasks():
    e = _unit_embeddings(t=3)
    skills = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    # Weights: task 0 failed by 1/3, task 1 by 2/3, task 2 by 3/3.
    z = SkillDescriptors().fit(e).skill_embeddings(skills)
    assert np.allclose(z[0], (1 / 3 * e[0] + 2 / 3 * e[1]) / 1.0)
    assert np.allclose(z[1], e[0])
    assert np.allclose(z[2], 0.0)


def test_given_weights_and_zero_weight_fallback():
    e = _unit_embeddings(t=3)
    d = SkillDescriptors().fit(e)
    skills = np.array([[1, 1, 0]], dtype=bool)
    assert np.allclose(d.skill_embeddings(skills, np.array([0.0, 1.0, 1.0]))[0], e[1])
    # Only weight-0 tasks solved: the plain mean of their embeddings.
    assert np.allclose(d.skill_embeddings(skills, np.zeros(3))[0], (e[0] + e[1]) / 2)


def test_transform_is_pca_scaled_into_bounds():
    e = _unit_embeddings()
    d = SkillDescriptors(dims=2).fit(e)
    projected_tasks = d.project(e)
    assert d.bounds == [(-1.0, 1.0), (-1.0, 1.0)]
    assert np.allclose(np.abs(projected_tasks).max(axis=0), 1.0)
    # A genome solving one task sits exactly on that task; nothing leaves the bounds.
    skills = np.eye(8, dtype=bool)
    assert np.allclose(d.transform(skills), projected_tasks)
    rng = np.random.default_rng(1)
    descriptors = d.transform(rng.random((50, 8)) < 0.3)
    assert descriptors.shape == (50, 2) and np.all(np.abs(descriptors) <= 1.0)
    # Components are orthonormal principal directions of the centred embeddings.
    assert np.allclose(d.components_ @ d.components_.T, np.eye(2))


def test_fewer_tasks_than_dims_leaves_spare_dims_at_zero():
    d = SkillDescriptors(dims=4).fit(_unit_embeddings(t=2))
    out = d.transform(np.array([[1, 0], [0, 1]], dtype=bool))
    assert out.shape == (2, 4)
    assert np.allclose(out[:, 1:], 0.0)
    assert np.allclose(np.abs(out[:, 0]), 1.0)


def test_errors():
    with pytest.raises(RuntimeError, match="fit must be called"):
        SkillDescriptors().transform(np.zeros((1, 3), dtype=bool))
    d = SkillDescriptors().fit(_unit_embeddings(t=3))
    with pytest.raises(QdLlmError, match="expected \\(genomes, 3 tasks\\)"):
        d.transform(np.zeros((1, 4), dtype=bool))
    with pytest.raises(QdLlmError, match="non-empty"):
        SkillDescriptors().fit(np.zeros((0, 5)))


def test_real_minilm_embeddings_separate_skills():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from qd_llm.models.resolve import resolve_embedder

    model = sentence_transformers.SentenceTransformer(resolve_embedder(), device="cpu")
    tasks = [
        "Add two one-digit numbers and answer with the sum.",
        "Multiply two small integers and give the product.",
        "Subtract the second number from the first.",
        "Write the given word in upper case letters.",
        "Reverse the letters of a three-letter word.",
        "Count the vowels in the given word.",
    ]
    e = model.encode(tasks, normalize_embeddings=True)
    assert e.shape == (6, 384)
    d = SkillDescriptors(dims=2).fit(e)
    skills = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=bool)
    math_expert, word_expert, generalist = d.transform(skills, np.ones(6))
    # The two specialists land far apart; the generalist sits between them.
    assert np.linalg.norm(math_expert - word_expert) > 0.5
    assert np.linalg.norm(generalist - (math_expert + word_expert) / 2) < 1e-6


def _clustered_embeddings(seed=0):
    """Three tight clusters of unit embeddings, 5 tasks each, shape ``(15, 12)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 12))
    e = np.repeat(centres, 5, axis=0) + 0.05 * rng.normal(size=(15, 12))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.mark.parametrize("projection", ["kernel_pca", "isomap", "estimator"])
def test_nonlinear_projections_are_bounded_deterministic_and_restorable(projection):
    from sklearn.manifold import Isomap

    estimator = Isomap(n_components=2, n_neighbors=6)
    e = _clustered_embeddings()
    chosen = estimator if projection == "estimator" else projection
    d = SkillDescriptors(dims=3, projection=chosen).fit(e)
    skills = np.random.default_rng(2).random((30, 15)) < 0.3
    out = d.transform(skills)
    assert out.shape == (30, 3) and np.all(np.abs(out) <= 1.0)
    # The tasks themselves span the box: each used axis reaches ±1.
    assert np.allclose(np.abs(d.project(e)).max(axis=0)[:2], 1.0)
    # A passed estimator is cloned, never fitted in place.
    assert not hasattr(estimator, "embedding_")
    again = SkillDescriptors(dims=3, projection=chosen).fit(e)
    assert np.array_equal(again.transform(skills), out)
    state = d.state_dict()
    if projection == "estimator":
        assert state["projection"] is None
        with pytest.raises(QdLlmError, match="pass it again as projection="):
            SkillDescriptors.from_state_dict(state)
        restored = SkillDescriptors.from_state_dict(state, projection=estimator)
    else:
        assert state["projection"] == projection and "components" not in state
        restored = SkillDescriptors.from_state_dict(state)
    assert np.array_equal(restored.transform(skills), out)


def test_pca_state_is_its_linear_map_and_restores_without_refitting():
    e = _clustered_embeddings()
    d = SkillDescriptors(dims=2).fit(e)
    state = d.state_dict()
    assert state["projection"] == "pca"
    assert state["components"].shape == (2, 12) and state["mean"].shape == (12,)
    # Restoring uses the stored map as it is: doctored components show in the output.
    state["components"] = -state["components"]
    restored = SkillDescriptors.from_state_dict(state)
    assert restored.estimator_ is None
    assert np.array_equal(restored.project(e), -d.project(e))
    # A state from before projections were named is PCA.
    del state["projection"]
    assert SkillDescriptors.from_state_dict(state).projection == "pca"


def test_pca_sign_follows_scikit_learn():
    d = SkillDescriptors(dims=2).fit(_clustered_embeddings())
    largest = d.components_[np.arange(2), np.abs(d.components_).argmax(axis=1)]
    assert np.all(largest > 0)


def test_bad_projections_are_one_line_errors():
    with pytest.raises(QdLlmError, match="unknown descriptor projection 'tsne'"):
        SkillDescriptors(projection="tsne")
    with pytest.raises(QdLlmError, match="scikit-learn transformer; got int"):
        SkillDescriptors(projection=3)
    from sklearn.decomposition import PCA

    with pytest.raises(QdLlmError, match="expected at most 1 columns"):
        SkillDescriptors(dims=1, projection=PCA(n_components=2)).fit(_clustered_embeddings())
    with pytest.raises(QdLlmError, match="cannot be fitted on 1 task"):
        SkillDescriptors(projection="isomap").fit(_clustered_embeddings()[:1])
