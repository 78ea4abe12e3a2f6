"""One `edgekit nas` worker on the shared study of tests/test_nas.py; prints the trial numbers it ran."""
import sys

import edgekit
from edgekit.targets.profiles import load_profile

from nas_helpers import SizeScorer, tiny_digits

out, trials = sys.argv[1], int(sys.argv[2])
prof = load_profile("iot")
result = edgekit.nas(data=tiny_digits(), profile=prof, out=out, study="shared", trials=trials, grid="none",
                     promote_k=0, proxy_epochs=1, train_threads=1, evaluator=SizeScorer(prof, hold_s=0.3))
print(" ".join(map(str, result.ran)))
