"""`python -m orpo_kit.bench`: the benchmark, or one worker run (`--worker SPEC`)."""

import sys

from .command import main

sys.exit(main())
