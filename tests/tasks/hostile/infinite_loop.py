def attack(params):
    while True:
        pass
