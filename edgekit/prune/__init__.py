"""Model compression before export: structured/unstructured pruning, low-rank factorization,
weight sharing, recovery by distillation, and the accuracy-aware back-off that picks the ratio."""
from .search import Compression, compress, grid

__all__ = ["Compression", "compress", "grid"]
