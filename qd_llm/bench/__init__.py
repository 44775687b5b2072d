"""Benchmarks behind ``qd-llm bench eval|sandbox|merge|dns|extract``.

Each module measures both sides of one comparison in the same process and
prints one JSON object; they are command-line tools, not a library, so this
package exports nothing.
"""

__all__: list[str] = []
