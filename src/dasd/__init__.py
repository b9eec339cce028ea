"""dasd: distribution-aligned self-distillation of LLM reasoning."""

__version__ = "0.1.0"
