"""Probe part: the links between the nodes of a weights chain. A node proves the transfer's
secret to the next node's listener (HMAC of a fresh challenge), names the link, and learns the
position the next node needs the stream from. Inlined by probes.load; stdlib only."""

import hmac
import os
import socket
import struct
import threading

AUTH_CONTEXT = b"clusterprep-weights-v1"
AUTH_SECONDS = 5.0
CONNECT_SECONDS = 10.0


def proof(secret, nonce):
    return hmac.new(bytes.fromhex(secret), AUTH_CONTEXT + nonce, "sha256").digest()


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise OSError("connection closed during the handshake")
        data += part
    return data


def connect_downstream(address, port, secret, link):
    """Connect to the next node's listener, prove the secret, name the link; returns (socket,
    the position the next node needs the stream from)."""
    sock = socket.create_connection((address, port), timeout=CONNECT_SECONDS)
    try:
        nonce = recv_exact(sock, 32)
        sock.sendall(proof(secret, nonce))
        if recv_exact(sock, 2) != b"ok":
            raise OSError("the next node refused the transfer's secret")
        sock.sendall(struct.pack(">Q", link))
        sock.settimeout(30)  # it tells its position once its main thread takes us on
        (offset,) = struct.unpack(">Q", recv_exact(sock, 8))
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock, offset


class Acceptor:
    """Accepts connections to the listener for the whole transfer; each proves the secret in a
    thread of its own, and each that does is handed to the main thread (the newest wins)."""

    MAX_PENDING = 32

    def __init__(self, server, secret, inbox, poll):
        self.server, self.secret, self.inbox = server, secret, inbox
        self.pending = threading.BoundedSemaphore(self.MAX_PENDING)
        self.closed = False
        server.settimeout(poll)  # how often it looks whether it was closed
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.closed:
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if not self.pending.acquire(blocking=False):
                conn.close()  # a flood of idle clients: refuse the surplus, keep listening
                continue
            threading.Thread(target=self.authenticate, args=(conn,), daemon=True).start()

    def authenticate(self, conn):
        try:
            conn.settimeout(AUTH_SECONDS)
            nonce = os.urandom(32)
            conn.sendall(nonce)
            if not hmac.compare_digest(recv_exact(conn, 32), proof(self.secret, nonce)):
                conn.close()
                return
            conn.sendall(b"ok")
            (link,) = struct.unpack(">Q", recv_exact(conn, 8))
            self.inbox.put(("upstream", conn, link))
        except OSError:
            conn.close()
        finally:
            self.pending.release()

    def close(self):
        self.closed = True
        try:
            self.server.close()
        except OSError:
            pass

