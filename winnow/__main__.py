import sys

from winnow.cli import main

if __name__ == "__main__":  # vLLM's engine processes re-import the main module: run nothing then
    sys.exit(main())
