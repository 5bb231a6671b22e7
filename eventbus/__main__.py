import signal
import sys

if sys.argv[1:2] in (["run"], ["up"]):  # SIGTERM this early: nothing has started, exit 0 (eventbus.shutdown)
    for _sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_sig, lambda *_: sys.exit(0))

from eventbus.cli import main

sys.exit(main())
