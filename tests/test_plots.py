"""`qd-llm plot` on a small real run: every figure is a real PNG of the standard size."""

import re

import pytest
from _analysis_run import tiny_run
from PIL import Image

from qd_llm.cli import main
from qd_llm.plots import DPI, FIGSIZE, lineage_layout
from qd_llm.snapshot import RunSnapshot

# Every test here plots the shared tiny run, which a whole loop run builds first.
pytestmark = pytest.mark.slow

EXPECTED = (
    "niche_map",
    "progress_coverage",
    "progress_fitness",
    "progress_qd_score",
    "progress_pool",
    "task_embeddings",
    "pass_matrix",
    "lineage",
    "operators",
)


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    import shutil

    run = tmp_path_factory.mktemp("plot") / "run"
    shutil.copytree(tiny_run(), run)
    assert main(["plot", str(run)]) == 0
    return run


def test_every_figure_is_a_png_of_the_standard_size(plotted):
    size = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    for name in EXPECTED:
        path = plotted / "figures" / f"{name}.png"
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == size, name
            # Not a blank canvas: a drawn figure has many distinct colours.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_report_links_every_figure_relatively(plotted):
    page = (plotted / "report.html").read_text()
    links = re.findall(r'<img src="([^"]+)"', page)
    assert {f"figures/{name}.png" for name in EXPECTED} <= set(links)
    assert all((plotted / link).exists() for link in links)
    assert "Key numbers" in page and "QD score" in page
    assert "http" not in page  # self-contained: no external resources


def test_lineage_layout_covers_population_and_ancestors(plotted):
    snapshot = RunSnapshot(plotted)
    positions, edges = lineage_layout(snapshot)
    assert set(snapshot.population) <= set(positions)
    for parent, child in edges:
        assert parent in snapshot.store.info(child).parents
        # Parents sit in earlier layers than their children.
        assert positions[parent][1] < positions[child][1]
    seeds = [g for g in positions if not snapshot.store.info(g).parents]
    assert seeds and all(positions[g][1] == 0 for g in seeds)
