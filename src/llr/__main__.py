"""``python -m llr <command>``; with LLR_FORKSERVER=1 the command runs in a
child of a warm fork server (see llr.runtime.forkserver), else in this process."""

import os
import sys


def _main() -> int:
    if os.environ.get("LLR_FORKSERVER") == "1" and len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        from llr.runtime.forkserver import run_via_server

        code = run_via_server(sys.argv[1:])
        if code is not None:
            return code
    from llr.cli import main

    return main()


if __name__ == "__main__":
    raise SystemExit(_main())
