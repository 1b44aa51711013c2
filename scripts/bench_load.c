/* Load generator and null sinks for scripts/bench (compiled on the fly with gcc).
 *
 *   bench_load udp-send HOST PORT RATE SECONDS LINES_PER_DGRAM NAMES PREFIX NSOCK
 *       RATE in lines/s (0: as fast as possible). Packed datagrams are filled up to
 *       1,400 bytes (LINES_PER_DGRAM 0) or carry exactly LINES_PER_DGRAM lines.
 *       NSOCK sockets (source ports) take turns per sendmmsg batch.
 *   bench_load tcp-send HOST PORT SECONDS NAMES PREFIX NCONN [carbon]
 *       NCONN connections write 256 KiB chunks of lines for SECONDS, then shut down
 *       their write side and wait for the peer to close: the time reported includes
 *       the receiver processing everything that was sent. "carbon": the same lines
 *       in Graphite's plaintext protocol ("PREFIX.metric.NNNN 1 N").
 *   bench_load udp-sink PORT SECONDS     recvmmsg loop counting lines (a C daemon
 *                                        doing nothing but counting)
 *   bench_load tcp-sink PORT SECONDS     accept one connection at a time, count '\n'
 *
 * Lines are "PREFIX.metric.NNNN:1|c" (3 of 4 names) and "PREFIX.metric.NNNN:12|ms"
 * (every 4th name), so a counter of stored cnt over the PREFIX names equals the lines
 * received. Every program prints one line of key=value pairs on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define DGRAM_MAX 1400
#define BATCH 32
#define RING 4096

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int carbon = 0; /* tcp-send ... carbon: Graphite plaintext lines instead */

static int make_line(char *out, const char *prefix, long i) {
    if (carbon) /* the same names and values, as "name value N" (N: now) */
        return sprintf(out, "%s.metric.%04ld %d N\n", prefix, i, i % 4 == 3 ? 12 : 1);
    if (i % 4 == 3)
        return sprintf(out, "%s.metric.%04ld:12|ms\n", prefix, i);
    return sprintf(out, "%s.metric.%04ld:1|c\n", prefix, i);
}

static struct sockaddr_in addr_of(const char *host, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", host);
        exit(2);
    }
    return a;
}

static int udp_send(int argc, char **argv) {
    if (argc != 10) return 2;
    struct sockaddr_in dst = addr_of(argv[2], atoi(argv[3]));
    double rate = atof(argv[4]), seconds = atof(argv[5]);
    int per = atoi(argv[6]);
    long names = atol(argv[7]);
    const char *prefix = argv[8];
    int nsock = atoi(argv[9]) > 0 ? atoi(argv[9]) : 1;
    static char bufs[RING][DGRAM_MAX + 64];
    static int lens[RING], counts[RING];
    long name = 0;
    for (int d = 0; d < RING; d++) {
        int len = 0, n = 0;
        char line[128];
        for (;;) {
            int l = make_line(line, prefix, name);
            if (per > 0 ? n == per : len + l > DGRAM_MAX) break;
            memcpy(bufs[d] + len, line, (size_t)l);
            len += l;
            n++;
            name = (name + 1) % names;
        }
        lens[d] = len;
        counts[d] = n;
    }
    int socks[64];
    if (nsock > 64) nsock = 64;
    for (int s = 0; s < nsock; s++) {
        socks[s] = socket(AF_INET, SOCK_DGRAM, 0);
        int sndbuf = 4 << 20;
        setsockopt(socks[s], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        if (connect(socks[s], (struct sockaddr *)&dst, sizeof dst) != 0) {
            perror("connect");
            return 1;
        }
    }
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    unsigned long long sent_lines = 0, sent_dgrams = 0, errors = 0;
    int ring = 0, turn = 0;
    double start = now_s(), end = start + seconds, t = start;
    while (t < end) {
        if (rate > 0) {
            double allowed = rate * (t - start) - (double)sent_lines;
            if (allowed < counts[ring] * (double)BATCH / 4) {
                struct timespec nap = {0, 20000};
                nanosleep(&nap, NULL);
                t = now_s();
                continue;
            }
        }
        int batch_lines = 0;
        for (int i = 0; i < BATCH; i++) {
            int d = (ring + i) % RING;
            iov[i].iov_base = bufs[d];
            iov[i].iov_len = (size_t)lens[d];
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int done = sendmmsg(socks[turn], msgs, BATCH, 0);
        if (done < 0) {
            errors++;
            done = 0;
        }
        for (int i = 0; i < done; i++) batch_lines += counts[(ring + i) % RING];
        ring = (ring + (done > 0 ? done : 1)) % RING;
        turn = (turn + 1) % nsock;
        sent_lines += (unsigned long long)batch_lines;
        sent_dgrams += (unsigned long long)done;
        t = now_s();
    }
    printf("sent_lines=%llu sent_dgrams=%llu seconds=%.6f send_errors=%llu "
           "lines_per_dgram=%.2f\n",
           sent_lines, sent_dgrams, t - start, errors,
           sent_dgrams ? (double)sent_lines / (double)sent_dgrams : 0.0);
    return 0;
}

static int tcp_send(int argc, char **argv) {
    if (argc != 8 && argc != 9) return 2;
    carbon = argc == 9 && !strcmp(argv[8], "carbon");
    struct sockaddr_in dst = addr_of(argv[2], atoi(argv[3]));
    double seconds = atof(argv[4]);
    long names = atol(argv[5]);
    const char *prefix = argv[6];
    int nconn = atoi(argv[7]) > 0 ? atoi(argv[7]) : 1;
    /* A chunk of whole lines, ~256 KiB, cycling through the names. */
    size_t cap = 256 * 1024;
    char *chunk = malloc(cap + 128);
    size_t len = 0;
    long lines = 0, name = 0;
    char line[128];
    while (len < cap) {
        int l = make_line(line, prefix, name);
        memcpy(chunk + len, line, (size_t)l);
        len += (size_t)l;
        lines++;
        name = (name + 1) % names;
    }
    int socks[64];
    if (nconn > 64) nconn = 64;
    for (int c = 0; c < nconn; c++) {
        socks[c] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(socks[c], (struct sockaddr *)&dst, sizeof dst) != 0) {
            perror("connect");
            return 1;
        }
    }
    unsigned long long sent_lines = 0;
    double start = now_s(), end = start + seconds;
    int c = 0;
    while (now_s() < end) {
        size_t off = 0;
        while (off < len) {
            ssize_t w = write(socks[c], chunk + off, len - off);
            if (w < 0) {
                if (errno == EINTR) continue;
                perror("write");
                return 1;
            }
            off += (size_t)w;
        }
        sent_lines += (unsigned long long)lines;
        c = (c + 1) % nconn;
    }
    double wrote = now_s() - start;
    for (c = 0; c < nconn; c++) {
        shutdown(socks[c], SHUT_WR);
        char sink[4096];
        while (read(socks[c], sink, sizeof sink) > 0) {
        }
        close(socks[c]);
    }
    printf("sent_lines=%llu seconds=%.6f write_seconds=%.6f\n", sent_lines, now_s() - start,
           wrote);
    free(chunk);
    return 0;
}

static unsigned long long count_lines(const char *p, size_t n) {
    unsigned long long lines = 0;
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        lines++;
        p = nl + 1;
    }
    return lines;
}

static int bound_socket(int type, int port) {
    int s = socket(AF_INET, type, 0);
    int one = 1, buf = 16 << 20;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (type == SOCK_DGRAM && setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) != 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    struct sockaddr_in a = addr_of("127.0.0.1", port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("bind");
        exit(1);
    }
    socklen_t alen = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &alen);
    fprintf(stderr, "listening on %d\n", ntohs(a.sin_port));
    return s;
}

static int udp_sink(int argc, char **argv) {
    if (argc != 4) return 2;
    int s = bound_socket(SOCK_DGRAM, atoi(argv[2]));
    double seconds = atof(argv[3]);
    static char bufs[64][2048];
    struct mmsghdr msgs[64];
    struct iovec iov[64];
    unsigned long long lines = 0, dgrams = 0;
    double start = now_s(), first = 0, last = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct pollfd pfd = {s, POLLIN, 0};
        if (poll(&pfd, 1, 200) <= 0) {
            if (now_s() - start > seconds || (last && now_s() - last > 1.0)) break;
            continue;
        }
        for (int i = 0; i < 64; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(s, msgs, 64, MSG_DONTWAIT, NULL);
        if (n <= 0) continue;
        if (!first) first = now_s();
        for (int i = 0; i < n; i++) {
            size_t len = msgs[i].msg_len;
            lines += count_lines(bufs[i], len);
        }
        dgrams += (unsigned long long)n;
        last = now_s();
    }
    printf("lines=%llu dgrams=%llu seconds=%.6f\n", lines, dgrams, last - first);
    return 0;
}

static int tcp_sink(int argc, char **argv) {
    if (argc != 4) return 2;
    int s = bound_socket(SOCK_STREAM, atoi(argv[2]));
    listen(s, 16);
    printf("ready\n");
    fflush(stdout);
    int c = accept(s, NULL, NULL);
    static char buf[1 << 20];
    unsigned long long lines = 0;
    double start = now_s();
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0) lines += count_lines(buf, (size_t)n);
    close(c);
    printf("lines=%llu seconds=%.6f\n", lines, now_s() - start);
    (void)argv;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "udp-send")) return udp_send(argc, argv);
    if (!strcmp(argv[1], "tcp-send")) return tcp_send(argc, argv);
    if (!strcmp(argv[1], "udp-sink")) return udp_sink(argc, argv);
    if (!strcmp(argv[1], "tcp-sink")) return tcp_sink(argc, argv);
    fprintf(stderr, "usage: see the comment at the top of bench_load.c\n");
    return 2;
}
