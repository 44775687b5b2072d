"""Rebuild a run's figures and report from its directory alone.

Usage::

    python analysis/rebuild_figures.py RUN

Writes ``RUN/figures/*.png`` and ``RUN/report.html`` (the same as ``qd-llm plot RUN``)
and prints the written paths.
"""

import argparse

from qd_llm.plots import write_figures
from qd_llm.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN")
    args = parser.parse_args()
    figures = write_figures(args.run_dir)
    for path in figures.values():
        print(path)
    print(write_report(args.run_dir, figures))


if __name__ == "__main__":
    main()
