def attack(params):
    import os
    import signal
    import time

    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(5)
    return 1.0
