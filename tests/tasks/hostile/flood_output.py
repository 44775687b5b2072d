def attack(params):
    import sys

    line = "flood " * 2000
    while True:
        print(line)
        print(line, file=sys.stderr)
