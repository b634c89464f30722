"""``python -m xlprobe ...``: the same command line as ``xlprobe ...`` (e.g. where the script is not on PATH)."""
from xlprobe.cli import app

app(prog_name="xlprobe")
