"""``python -m baiduwx_async.emulator``: serve the emulator with uvicorn."""

import sys

from ._server import main

if __name__ == "__main__":
    sys.exit(main())
