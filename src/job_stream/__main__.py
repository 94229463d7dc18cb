"""``python -m job_stream``: the job_stream command (see job_stream.cli)."""
from .cli import main

main(prog_name='job_stream')
