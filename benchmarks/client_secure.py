"""Secured peer links against raw ones, measured in the same run on loopback TCP.

Three modes over fresh loopback TCP connections between two processes: ``raw`` (no
securing: today's links), ``auth`` (``secure(encrypt=False)``: the job-secret proof in
the clear, stdlib only) and ``tls`` (``secure()``: TLS 1.3 with an ephemeral
certificate, then the proof). For each: the time ``secure()`` takes (median of many
fresh connections, TCP connect excluded), the 8-byte round trip and the bandwidth of
one large transfer received with ``recv_into`` into a preallocated buffer, with the CPU
time each side spends per GiB (what bounds bandwidth when cores are shared). The modes
run in interleaved rounds and each reports its best round; ratios are to ``raw``.

    .venv/bin/python benchmarks/client_secure.py [--handshakes 50] [--rtt-iters 3000]
        [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import socket
import ssl
import statistics
import struct
import time

import client_common

from fmi_client.securelink import secure

SECRET = "benchmark-job-secret-0123456789"
MODES = ("raw", "auth", "tls")
CHUNK = 4 << 20


def secured(sock: socket.socket, mode: str, me: int, peer: int) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "raw":
        return sock
    return secure(
        sock,
        secret=SECRET,
        pairing="bench0_1",
        my_rank=me,
        peer_rank=peer,
        encrypt=mode == "tls",
        deadline=time.monotonic() + 30,
    )


def echo_side(
    listener: socket.socket, plan: list[tuple[str, str]], iters: int, nbytes: int
) -> None:
    """The peer (rank 1): for each planned connection, secure it and serve the phase."""
    big = bytearray(nbytes)
    for mode, phase in plan:
        sock, _ = listener.accept()
        conn = secured(sock, mode, 1, 0)
        if phase == "data":
            buf = bytearray(8)
            for _ in range(iters):
                client_common.recv_exact_into(conn, memoryview(buf))
                conn.sendall(buf)
            cpu = time.process_time()
            client_common.recv_exact_into(conn, memoryview(big))
            conn.sendall(struct.pack("!d", time.process_time() - cpu))
        conn.recv(1)  # the driver closes first
        conn.close()


def drive_handshake(address: tuple[str, int], mode: str) -> float:
    sock = socket.create_connection(address)
    start = time.perf_counter()
    conn = secured(sock, mode, 0, 1)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def drive_data(
    address: tuple[str, int], mode: str, iters: int, nbytes: int
) -> tuple[float, float, float, float]:
    """(8 B round trip, bandwidth, sender and receiver CPU seconds per GiB)."""
    conn = secured(socket.create_connection(address), mode, 0, 1)
    msg, buf = b"8bytes!!", bytearray(8)
    start = time.perf_counter()
    for _ in range(iters):
        conn.sendall(msg)
        client_common.recv_exact_into(conn, memoryview(buf))
    rtt = (time.perf_counter() - start) / iters
    payload = memoryview(bytearray(b"\xa5" * nbytes))
    cpu, start = time.process_time(), time.perf_counter()
    for offset in range(0, nbytes, CHUNK):
        conn.sendall(payload[offset : offset + CHUNK])
    send_cpu = time.process_time() - cpu
    reply = bytearray(8)
    client_common.recv_exact_into(conn, memoryview(reply))
    bandwidth = nbytes / (time.perf_counter() - start)
    conn.close()
    (recv_cpu,) = struct.unpack("!d", reply)
    gib = nbytes / 2**30
    return rtt, bandwidth, send_cpu / gib, recv_cpu / gib


def tls_in_memory(nbytes: int) -> tuple[float, float]:
    """CPU seconds per GiB to encrypt and to decrypt TLS records with no socket at all
    (memory BIOs): the floor under ``tls`` whatever the network and the scheduler do."""
    from fmi_client.securelink import _context, _Identity, _shared_client_context

    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = _context("server", _Identity()).wrap_bio(server_in, server_out, server_side=True)
    client = _shared_client_context().wrap_bio(client_in, client_out)
    for _ in range(10):  # the handshake, by hand
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    chunk, sink = memoryview(bytearray(CHUNK)), memoryview(bytearray(CHUNK))
    encrypt = decrypt = 0.0
    for _ in range(0, nbytes, CHUNK):
        cpu = time.process_time()
        client.write(chunk)
        records = client_out.read()
        encrypt += time.process_time() - cpu
        cpu = time.process_time()
        server_in.write(records)
        got = 0
        while got < CHUNK:
            got += server.read(CHUNK - got, sink[got:])
        decrypt += time.process_time() - cpu
    gib = nbytes / 2**30
    return encrypt / gib, decrypt / gib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=50)
    parser.add_argument("--rtt-iters", type=int, default=3000)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    nbytes = args.mib << 20
    plan = [(mode, "handshake") for _ in range(args.handshakes) for mode in MODES]
    plan += [(mode, "data") for _ in range(args.rounds) for mode in MODES]
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    address = listener.getsockname()
    peer = mp.get_context("fork").Process(
        target=echo_side, args=(listener, plan, args.rtt_iters, nbytes), daemon=True
    )
    peer.start()
    handshakes: dict[str, list[float]] = {mode: [] for mode in MODES}
    rtts: dict[str, list[float]] = {mode: [] for mode in MODES}
    bandwidths: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpus: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for mode, phase in plan:
        if phase == "handshake":
            handshakes[mode].append(drive_handshake(address, mode))
        else:
            rtt, bandwidth, send_cpu, recv_cpu = drive_data(address, mode, args.rtt_iters, nbytes)
            rtts[mode].append(rtt)
            bandwidths[mode].append(bandwidth)
            cpus[mode].append((send_cpu, recv_cpu))
    peer.join(60)
    listener.close()

    raw_rtt, raw_bw = min(rtts["raw"]), max(bandwidths["raw"])
    rows = []
    for mode in MODES:
        rtt, bandwidth = min(rtts[mode]), max(bandwidths[mode])
        rows.append(
            [
                mode,
                f"{statistics.median(handshakes[mode]) * 1e3:.2f} ms",
                f"{rtt * 1e6:.1f} us",
                f"{rtt / raw_rtt:.2f}x",
                f"{bandwidth / 2**30:.2f} GiB/s",
                f"{bandwidth / raw_bw:.2f}x",
                f"{min(c[0] for c in cpus[mode]):.2f} / {min(c[1] for c in cpus[mode]):.2f} s",
            ]
        )
    encrypt_cpu, decrypt_cpu = tls_in_memory(nbytes)
    print(client_common.machine())
    print(f"OpenSSL {ssl.OPENSSL_VERSION}; {args.mib} MiB transfers, best of {args.rounds}")
    print(
        client_common.table(
            [
                "mode",
                "secure() median",
                "8 B RTT",
                "RTT vs raw",
                "bandwidth",
                "bw vs raw",
                "CPU per GiB send / recv",
            ],
            rows,
        )
    )
    print(
        f"TLS records in memory, no sockets: encrypt {encrypt_cpu:.2f} s, decrypt "
        f"{decrypt_cpu:.2f} s CPU per GiB (the ceiling per core is 1 / that)"
    )


if __name__ == "__main__":
    main()
