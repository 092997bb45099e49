"""``python -m imgconv``: the same command line as ``imgconv``."""

from imgconv.resident import main

if __name__ == "__main__":
    main()
