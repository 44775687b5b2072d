def attack(params):
    import os

    wrote = 0.0
    try:
        with open(os.path.join(params["task_dir"], "pwned"), "w") as f:
            f.write("x")
        wrote = 1.0
    except OSError:
        pass
    # These may land in the sandbox's private tmpfs; the test checks the host.
    for path in params["host_paths"]:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("pwned")
        except OSError:
            pass
    return wrote
