"""Running a run directory's loop to its last generation, as ``qd-llm run`` does.

Shared by the command line and experiments (which run many run directories,
locally or as Ray tasks).
"""

from qd_llm.errors import STORAGE_ERRNOS, QdLlmError, storage_problem
from qd_llm.runs import RunDir, format_status


def execute_run(config, run: RunDir) -> int:
    """Runs (or resumes) the loop of ``run`` to its last generation and prints its status.

    Raises:
        QdLlmError: A storage problem stopped the run; it resumes from its last checkpoint.
    """
    from qd_llm.loop import Coevolution

    loop = Coevolution(config, run)
    try:
        loop.run()
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        # Every write is atomic and the checkpoint goes last, so nothing finished is lost.
        raise QdLlmError(
            f"{storage_problem(e)} (run directory {run.path}); the run keeps every generation "
            f"up to its last checkpoint: fix that, then `qd-llm resume {run.path}`"
        ) from None
    finally:
        loop.close()
    if config.heatmap:
        from qd_llm.plots import niche_map_figure, save_figure

        figure = niche_map_figure(loop.niche, generation=loop.generation)
        if figure is not None:
            save_figure(figure, run.figures_dir / "niche_map.png")
    print(format_status(run))
    return 0
