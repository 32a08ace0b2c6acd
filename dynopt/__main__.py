"""``python -m dynopt`` is the ``dynopt`` command."""

import sys

from .cli import main

sys.exit(main())
