def attack(params):
    # Many files, each below the file size limit, and no-space errors ignored.
    import contextlib

    block = b"x" * (1 << 20)
    for i in range(1 << 20):
        with contextlib.suppress(OSError), open(f"fill-{i}", "wb") as f:
            f.write(block)
    return 1.0
