def attack(params):
    import socket

    try:
        socket.create_connection(("127.0.0.1", params["port"]), timeout=1).close()
    except OSError:
        return 0.0
    return 1.0
