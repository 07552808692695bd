"""``python -m mpm.cli``."""

import sys

try:
    from mpm.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before main() could catch it
    import os

    sys.stderr.write("mpm: interrupted\n")
    sys.stderr.flush()
    os._exit(130)
sys.exit(code)
