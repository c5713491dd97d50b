"""``python -m gilmsg.testing.sandbox``: one stand-in process (see :mod:`.standin`)."""

import sys

from gilmsg.testing.sandbox.standin import standin_main

sys.exit(standin_main())
