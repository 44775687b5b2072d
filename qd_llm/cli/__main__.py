"""``python -m qd_llm.cli``: the same as the ``qd-llm`` console script."""

import sys

from qd_llm.cli.main import main

sys.exit(main())
