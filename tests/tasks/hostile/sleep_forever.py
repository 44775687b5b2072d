def attack(params):
    import time

    time.sleep(10**6)
