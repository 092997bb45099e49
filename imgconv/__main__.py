"""``python -m imgconv``: the same command line as ``imgconv``."""

from imgconv.cli import main

if __name__ == "__main__":
    main()
