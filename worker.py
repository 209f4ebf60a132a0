"""A sopflow worker, started from the repository: `python worker.py` (installed: `sopflow worker`).

The worker itself is sopflow/worker.py, so an installed package has it too.
"""

from sopflow.worker import main

if __name__ == "__main__":
    main()
