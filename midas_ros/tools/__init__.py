"""Command-line tools (offline inference, demo, benchmark, ...), run as ``python -m midas_ros``."""
