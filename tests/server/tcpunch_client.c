/*
 * A test client that behaves on the wire exactly like the original TCPunch client's
 * pair(): SO_REUSEADDR+SO_REUSEPORT on the rendezvous socket, the raw pairing name in one
 * send(), then two 8-byte reads of the C struct {in_addr ip; in_port_t port;} with
 * MSG_WAITALL: first its own public endpoint, then the peer's. SO_RCVTIMEO is its only
 * timeout (the max_timeout FMI passes). Written for these tests from the wire facts.
 *
 * usage: tcpunch_client HOST PORT NAME TIMEOUT_MS
 * prints: local=IP:PORT own=IP:PORT peer=IP:PORT closed=0|1
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct endpoint_reply {
    struct in_addr ip;
    in_port_t port;
};

static int fail(const char *what) {
    perror(what);
    return 2;
}

static void show(const char *label, struct in_addr ip, in_port_t port_be) {
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &ip, text, sizeof text);
    printf("%s=%s:%u ", label, text, (unsigned)ntohs(port_be));
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT NAME TIMEOUT_MS\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return fail("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        return fail("setsockopt reuse");
    long timeout_ms = atol(argv[4]);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        return fail("setsockopt rcvtimeo");

    struct sockaddr_in server;
    memset(&server, 0, sizeof server);
    server.sin_family = AF_INET;
    server.sin_addr.s_addr = inet_addr(argv[1]);
    server.sin_port = htons((unsigned short)atoi(argv[2]));
    if (connect(fd, (struct sockaddr *)&server, sizeof server) != 0) return fail("connect");

    const char *name = argv[3];
    if (send(fd, name, strlen(name), MSG_DONTWAIT) == -1) return fail("send");

    struct endpoint_reply own, peer;
    ssize_t n = recv(fd, &own, sizeof own, MSG_WAITALL);
    if (n != (ssize_t)sizeof own) {
        fprintf(stderr, "own endpoint: got %zd bytes\n", n);
        return 3;
    }
    n = recv(fd, &peer, sizeof peer, MSG_WAITALL);
    if (n != (ssize_t)sizeof peer) {
        fprintf(stderr, "peer endpoint: got %zd bytes\n", n);
        return 4;
    }
    char extra;
    int closed = recv(fd, &extra, 1, 0) == 0;

    struct sockaddr_in local;
    socklen_t len = sizeof local;
    getsockname(fd, (struct sockaddr *)&local, &len);
    show("local", local.sin_addr, local.sin_port);
    show("own", own.ip, own.port);
    show("peer", peer.ip, peer.port);
    printf("closed=%d\n", closed);
    close(fd);
    return 0;
}
