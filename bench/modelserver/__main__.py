"""`python -m bench.modelserver`: the perf_analyzer bench (bench/modelserver/perf.py).

The earlier Python load generator's bench is `python -m bench.modelserver.loadgen_bench`.
"""

import sys

from bench.modelserver.perf import main

sys.exit(main())
