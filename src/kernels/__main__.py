"""`python -m src.kernels`: build the CPU kernels for this machine now (the Makefile's set-up step)."""
import sys

from src.kernels.build import main

sys.exit(main())
