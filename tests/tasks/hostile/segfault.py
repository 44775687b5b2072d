def attack(params):
    import ctypes

    ctypes.string_at(0)
