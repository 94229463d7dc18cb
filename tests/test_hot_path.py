"""What the batch-at-a-time hot path must keep exactly as item-at-a-time did."""


def test_map_order_none_args_and_retry(run_script, tmp_path):
    run_script(f'''
        import os, signal
        import job_stream
        from job_stream.inline import Args, Work, Multiple
        for mp in (True, False):
            got = job_stream.map(lambda x: None if x % 3 == 0 else x,
                                 range(50000), useMultiprocessing=mp, report=False)
            assert got == [None if x % 3 == 0 else x for x in range(50000)]
        assert job_stream.map(pow, [1, 2, 3], [2, 2, 2], report=False) == [1, 4, 9]
        assert job_stream.map(lambda a: type(a).__name__, [Args(1)],
                              report=False) == ['Args']
        assert job_stream.map(abs, iter([]), report=False) == []
        flag = {str(tmp_path / 'killed')!r}
        def killer(x):
            if x == 12345 and not os.path.exists(flag):
                open(flag, 'w').close()
                os.kill(os.getpid(), signal.SIGKILL)
            return x
        assert job_stream.map(killer, range(30000), report=False) == list(range(30000))
        assert os.path.exists(flag)
        # None, Multiple and Args between fused stages
        with Work(range(10), report=False) as w:
            @w.job
            def m(x):
                return (Multiple([x, None, x]) if x % 2 else
                        None if x == 4 else Args(x, y=1))
            @w.job
            def g(x, y=0):
                return x + y
            r = w.run()
        assert sorted(r) == sorted([1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 1, 3, 7, 9])
        print('ok')
    ''')


def test_failures_name_the_work(run_script):
    proc = run_script('''
        import job_stream
        def f(x):
            return 1 / (x - 777)
        job_stream.map(f, range(5000), report=False)
    ''', check=False)
    assert proc.returncode != 0
    assert 'ZeroDivisionError' in proc.stderr
    assert 'work: 777' in proc.stderr
    assert 'return 1 / (x - 777)' in proc.stderr
    proc = run_script('''
        from job_stream.inline import Work
        with Work(range(100), report=False) as w:
            @w.job
            def a(x):
                return x
            @w.result
            def r(x):
                if x == 42:
                    raise KeyError('x42')
    ''', check=False)
    assert proc.returncode != 0
    assert 'result handler' in proc.stderr and 'work: 42' in proc.stderr
