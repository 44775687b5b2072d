def attack(params):
    import os

    os.abort()
