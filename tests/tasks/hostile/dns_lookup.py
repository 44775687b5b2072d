def attack(params):
    import socket

    try:
        socket.getaddrinfo("pypi.org", 443)
    except OSError:
        return 0.0
    return 1.0
