"""Model compression before export: structured/unstructured pruning, low-rank factorization, weight
sharing and recovery by distillation. The accuracy-aware back-off that picks the ratio is
prune/search.py."""
from .compression import Compression, grid

__all__ = ["Compression", "grid"]
