def attack(params):
    # Eight processes, each staying under the per-process address-space limit:
    # only a limit on the whole job stops them.
    import os
    import time

    for _ in range(8):
        if os.fork() == 0:
            hog = []
            try:
                while len(hog) < 12:
                    hog.append(bytearray(16 << 20))
            except MemoryError:
                pass
            time.sleep(60)
            os._exit(0)
    time.sleep(60)
    return 1.0
