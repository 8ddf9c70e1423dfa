/*
 * A reference rendezvous server with the original TCPunch server's design, used only
 * to put benchmark figures in proportion on a noisy machine: one thread, blocking
 * accept(), one recv() of at most 100 bytes, the 8-byte own endpoint at once, then pair
 * or wait. Like the original it stalls on a client that sends nothing, so the benchmark
 * runs it clean only. Written for the benchmark from the wire facts.
 * Built by benchmarks/server_load.py --reference with gcc.
 *
 * usage: server_reference PORT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SLOTS 65536 /* open addressing; far more than the waiters a run keeps */

struct slot {
    char name[101];
    int fd;
    unsigned char reply[8];
    int used;
};

static struct slot table[SLOTS];

static unsigned hash(const char *s) {
    unsigned h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 10000;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096)) {
        perror("listen");
        return 1;
    }
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        int fd = accept(lfd, (struct sockaddr *)&peer, &len);
        if (fd < 0) continue;
        char name[101] = {0};
        ssize_t n = recv(fd, name, 100, 0);
        if (n <= 0) {
            close(fd);
            continue;
        }
        unsigned char reply[8] = {0};
        memcpy(reply, &peer.sin_addr, 4);
        memcpy(reply + 4, &peer.sin_port, 2);
        send(fd, reply, 8, 0);
        unsigned h = hash(name) % SLOTS;
        while (table[h].used && strcmp(table[h].name, name) != 0) h = (h + 1) % SLOTS;
        if (table[h].used) {
            send(table[h].fd, reply, 8, 0);
            close(table[h].fd);
            send(fd, table[h].reply, 8, 0);
            close(fd);
            /* delete with backward shift so that probe chains stay intact */
            unsigned i = h, j = h;
            table[i].used = 0;
            for (;;) {
                j = (j + 1) % SLOTS;
                if (!table[j].used) break;
                unsigned k = hash(table[j].name) % SLOTS;
                if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
                    table[i] = table[j];
                    table[j].used = 0;
                    i = j;
                }
            }
        } else {
            strcpy(table[h].name, name);
            table[h].fd = fd;
            memcpy(table[h].reply, reply, 8);
            table[h].used = 1;
        }
    }
}
