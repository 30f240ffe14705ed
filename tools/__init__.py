"""Developer tools: benchmark, memory probe, soak test, the PyTorch reference and the demo data.

Run from the repository root (`.venv/bin/python tools/bench.py ...`); src/ never imports them."""
