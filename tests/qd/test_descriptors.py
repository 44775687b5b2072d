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
