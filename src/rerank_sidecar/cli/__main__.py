"""`python -m rerank_sidecar.cli`, as launchers, benchmarks and tests start the server."""

import sys

from . import main

sys.exit(main())
