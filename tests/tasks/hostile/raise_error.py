def attack(params):
    raise RuntimeError("hostile task refuses")
