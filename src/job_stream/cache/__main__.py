"""``python -m job_stream.cache show|clear|explain|runs ...``"""
from .cli import main

if __name__ == '__main__':
    main()
