"""qd_llm: quality-diversity discovery of complementary LLM experts (AC/DC)."""

__version__ = "0.1.0"
