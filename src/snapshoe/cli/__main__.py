"""``python -m snapshoe.cli``: what ``snapshoe up`` and the tests start processes with."""

from snapshoe.cli import main

if __name__ == "__main__":
    main()
