"""Executors: where evaluation and scoring run (``local`` in process, or ``ray``).

The ``ray`` executor (:mod:`qd_llm.executors.ray_executor`) needs the
optional ``ray`` extra (``pip install -e ".[ray]"``); it is imported only when
a run asks for it.
"""
