"""Where user code runs: in this process, in a local worker pool (and, with
MPI, on other ranks).  See :mod:`job_stream.executors.base` for the contract."""
