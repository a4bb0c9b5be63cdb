"""``python -m service.cli``: the same as the ``cleftscore`` console script."""

import sys

from service.cli.main import main

sys.exit(main())
