"""`python -m vnode ...` is `vnode ...`."""

import sys

from vnode.cli import main

sys.exit(main())
