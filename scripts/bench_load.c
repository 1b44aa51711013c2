/* Load generator and null sinks for scripts/bench (compiled on the fly with gcc).
 *
 *   bench_load udp-send HOST PORT RATE SECONDS LINES_PER_DGRAM NAMES PREFIX NSOCK [SHAPE]
 *       RATE in lines/s (0: as fast as possible). Packed datagrams are filled up to
 *       1,400 bytes (LINES_PER_DGRAM 0) or carry exactly LINES_PER_DGRAM lines.
 *       NSOCK sockets (source ports) take turns per sendmmsg batch.
 *   bench_load tcp-send HOST PORT SECONDS NAMES PREFIX NCONN [SHAPE]
 *       NCONN connections write 256 KiB chunks of lines for SECONDS, then shut down
 *       their write side and wait for the peer to close: the time reported includes
 *       the receiver processing everything that was sent.
 *   bench_load udp-sink PORT SECONDS     recvmmsg loop counting lines (a C daemon
 *                                        doing nothing but counting)
 *   bench_load tcp-sink PORT SECONDS     accept one connection at a time, count '\n'
 *
 * SHAPE (default "mix"):
 *   mix       the realistic mix (issue 15): NAMES names (the bench uses 10,000), each
 *             of one fixed type: 40% counters (a quarter of their lines sampled,
 *             "n|c|@0.1"), 40% timers "%0.6f|ms" (pystatsd's timing format), 10%
 *             gauges, 10% "|h"/"|d"; 30% of lines carry 1-4 DogStatsD tags; 1% of
 *             lines are invalid (a bad value, a bad name, a set). Values are random
 *             (xorshift, fixed seed): the ring of datagrams holds ~100k distinct lines.
 *   friendly  "PREFIX.metric.NNNN:1|c" (3 of 4 names) and "...:12|ms" (every 4th): the
 *             shape of the first figures, which a cache of value|type tails could learn.
 *   carbon    the friendly names and values in Graphite's plaintext protocol
 *             ("PREFIX.metric.NNNN 1 N"), for the carbon listener (tcp-send only).
 *   replay:FILE  the datagrams in FILE (each a 4-byte little-endian length, then the
 *             bytes), in turn: pystatsd's own output. Names start with "XXXXXX", which
 *             a 6-character PREFIX replaces.
 * Every good line's weight (1/rate) is summed into sent_weight, so the stored count of
 * the PREFIX names over sent_weight is the fraction received. Every program prints one
 * line of key=value pairs on stdout.
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

static unsigned long long rng_state = 0x9E3779B97F4A7C15ULL;

static unsigned long long next_random(void) { /* xorshift64*: fast, fixed seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static const char *const tag_pool[] = {"env:prod", "env:staging", "host:web-12",
                                       "host:db-3", "region:us-east-1", "service:api",
                                       "version:1.4.2", "az:b"};

enum shape { SHAPE_MIX, SHAPE_FRIENDLY, SHAPE_REPLAY, SHAPE_CARBON };
static enum shape shape = SHAPE_MIX;

/* One line into out (with its "\n"); *weight: what it adds to the stored count. */
static int make_line(char *out, const char *prefix, long i, double *weight) {
    *weight = 1.0;
    if (shape == SHAPE_CARBON) /* the friendly names and values, as "name value N" */
        return sprintf(out, "%s.metric.%04ld %d N\n", prefix, i, i % 4 == 3 ? 12 : 1);
    if (shape == SHAPE_FRIENDLY) {
        if (i % 4 == 3) return sprintf(out, "%s.metric.%04ld:12|ms\n", prefix, i);
        return sprintf(out, "%s.metric.%04ld:1|c\n", prefix, i);
    }
    unsigned long long r = next_random();
    if (r % 100 == 0) { /* 1% invalid lines: dropped, counted by reason */
        *weight = 0.0;
        switch ((r >> 8) % 3) {
        case 0: return sprintf(out, "%s.m.%05ld:abc|c\n", prefix, i);
        case 1: return sprintf(out, "%s..m.%05ld:1|c\n", prefix, i);
        default: return sprintf(out, "%s.m.%05ld:1|q\n", prefix, i); /* unknown type (|s is a set) */
        }
    }
    int len;
    long kind = (i * 7919) % 100; /* a name keeps its type */
    double x = (double)((r >> 16) % 1000000000ULL) / 1e6; /* [0, 1000) */
    if (kind < 40) {
        if ((r >> 40) % 4 == 0) {
            len = sprintf(out, "%s.m.%05ld:%llu|c|@0.1", prefix, i, 1 + (r >> 44) % 5);
            *weight = 1.0 / 0.1;
        } else {
            len = sprintf(out, "%s.m.%05ld:%llu|c", prefix, i, 1 + (r >> 44) % 5);
        }
    } else if (kind < 80) {
        len = sprintf(out, "%s.m.%05ld:%0.6f|ms", prefix, i, x);
    } else if (kind < 90) {
        len = sprintf(out, "%s.m.%05ld:%0.2f|g", prefix, i, x);
    } else {
        len = sprintf(out, "%s.m.%05ld:%0.3f|%s", prefix, i, x, kind < 95 ? "h" : "d");
    }
    if ((r >> 48) % 10 < 3) { /* 30% with 1-4 DogStatsD tags */
        int tags = 1 + (int)((r >> 52) % 4);
        len += sprintf(out + len, "|#");
        for (int t = 0; t < tags; t++)
            len += sprintf(out + len, "%s%s", t ? "," : "", tag_pool[(r >> (40 - 3 * t)) % 8]);
    }
    out[len++] = '\n';
    out[len] = '\0';
    return len;
}

/* SHAPE_REPLAY: the datagrams of a capture file, in turn. */
static char *replay_data;
static size_t replay_size, replay_pos;

static int load_replay(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    replay_data = malloc((size_t)size + 1);
    if (!replay_data || fread(replay_data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return -1;
    }
    fclose(f);
    replay_size = (size_t)size;
    return 0;
}

/* The captured names start with REPLAY_MARK; each run writes its 6-character PREFIX
 * over it, so the stored count of that run's names is what it delivered. */
#define REPLAY_MARK "XXXXXX"
static const char *replay_prefix = REPLAY_MARK;

/* The next captured datagram (at most cap bytes); returns its length, 0 at none. */
static int next_replay(char *out, size_t cap) {
    for (int tries = 0; tries < 2; tries++) {
        if (replay_pos + 4 <= replay_size) {
            unsigned char *h = (unsigned char *)replay_data + replay_pos;
            size_t len = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 |
                         (size_t)h[3] << 24;
            if (replay_pos + 4 + len <= replay_size && len <= cap) {
                memcpy(out, replay_data + replay_pos + 4, len);
                replay_pos += 4 + len;
                size_t mark = strlen(REPLAY_MARK);
                if (strlen(replay_prefix) == mark) {
                    for (size_t i = 0; i + mark <= len; i++) {
                        if ((i == 0 || out[i - 1] == '\n') && !memcmp(out + i, REPLAY_MARK, mark))
                            memcpy(out + i, replay_prefix, mark);
                    }
                }
                return (int)len;
            }
        }
        replay_pos = 0; /* wrap around */
    }
    return 0;
}

static int parse_shape(const char *arg) {
    if (!strcmp(arg, "mix")) shape = SHAPE_MIX;
    else if (!strcmp(arg, "friendly")) shape = SHAPE_FRIENDLY;
    else if (!strcmp(arg, "carbon")) shape = SHAPE_CARBON;
    else if (!strncmp(arg, "replay:", 7)) {
        shape = SHAPE_REPLAY;
        return load_replay(arg + 7);
    } else {
        fprintf(stderr, "unknown shape %s\n", arg);
        return -1;
    }
    return 0;
}

static int count_newlines(const char *p, int len) {
    int n = 0;
    for (int i = 0; i < len; i++) n += p[i] == '\n';
    return n + (len > 0 && p[len - 1] != '\n');
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
    if (argc != 10 && argc != 11) return 2;
    if (argc == 11 && parse_shape(argv[10]) < 0) return 2;
    struct sockaddr_in dst = addr_of(argv[2], atoi(argv[3]));
    double rate = atof(argv[4]), seconds = atof(argv[5]);
    int per = atoi(argv[6]);
    long names = atol(argv[7]);
    const char *prefix = argv[8];
    replay_prefix = prefix;
    int nsock = atoi(argv[9]) > 0 ? atoi(argv[9]) : 1;
    static char bufs[RING][DGRAM_MAX + 64];
    static int lens[RING], counts[RING];
    static double weights[RING];
    long name = 0;
    for (int d = 0; d < RING; d++) {
        int len = 0, n = 0;
        double w = 0, lw = 0;
        char line[256];
        if (shape == SHAPE_REPLAY) {
            len = next_replay(bufs[d], DGRAM_MAX + 64);
            n = count_newlines(bufs[d], len);
            w = n; /* pystatsd's lines here are unsampled and valid */
        } else {
            for (;;) {
                unsigned long long saved = rng_state;
                int l = make_line(line, prefix, name, &lw);
                if (per > 0 ? n == per : len + l > DGRAM_MAX) {
                    rng_state = saved; /* this line starts the next datagram */
                    break;
                }
                memcpy(bufs[d] + len, line, (size_t)l);
                len += l;
                n++;
                w += lw;
                /* names in a random order, as from a fleet (not round-robin) */
                name = shape == SHAPE_FRIENDLY ? (name + 1) % names
                                               : (long)(next_random() % (unsigned long long)names);
            }
        }
        lens[d] = len;
        counts[d] = n;
        weights[d] = w;
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
    double sent_weight = 0;
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
        for (int i = 0; i < done; i++) {
            batch_lines += counts[(ring + i) % RING];
            sent_weight += weights[(ring + i) % RING];
        }
        ring = (ring + (done > 0 ? done : 1)) % RING;
        turn = (turn + 1) % nsock;
        sent_lines += (unsigned long long)batch_lines;
        sent_dgrams += (unsigned long long)done;
        t = now_s();
    }
    printf("sent_lines=%llu sent_dgrams=%llu seconds=%.6f send_errors=%llu "
           "lines_per_dgram=%.2f sent_weight=%.1f\n",
           sent_lines, sent_dgrams, t - start, errors,
           sent_dgrams ? (double)sent_lines / (double)sent_dgrams : 0.0, sent_weight);
    return 0;
}

static int tcp_send(int argc, char **argv) {
    if (argc != 8 && argc != 9) return 2;
    if (argc == 9 && parse_shape(argv[8]) < 0) return 2;
    struct sockaddr_in dst = addr_of(argv[2], atoi(argv[3]));
    double seconds = atof(argv[4]);
    long names = atol(argv[5]);
    const char *prefix = argv[6];
    replay_prefix = prefix;
    int nconn = atoi(argv[7]) > 0 ? atoi(argv[7]) : 1;
    /* A chunk of whole lines, ~256 KiB, cycling through the names. */
    size_t cap = 256 * 1024;
    char *chunk = malloc(cap + 128);
    size_t len = 0;
    long lines = 0, name = 0;
    double weight = 0, lw = 0;
    char line[DGRAM_MAX + 64];
    while (len < cap) {
        int l, n = 1;
        if (shape == SHAPE_REPLAY) {
            l = next_replay(line, sizeof line - 1);
            if (l == 0) break;
            if (line[l - 1] != '\n') line[l++] = '\n';
            n = count_newlines(line, l);
            lw = n;
        } else {
            l = make_line(line, prefix, name, &lw);
            name = shape == SHAPE_FRIENDLY ? (name + 1) % names
                                           : (long)(next_random() % (unsigned long long)names);
        }
        if (len + (size_t)l > cap + 128) break;
        memcpy(chunk + len, line, (size_t)l);
        len += (size_t)l;
        lines += n;
        weight += lw;
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
    unsigned long long sent_lines = 0, chunks = 0;
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
        chunks++;
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
    printf("sent_lines=%llu seconds=%.6f write_seconds=%.6f sent_weight=%.1f\n", sent_lines,
           now_s() - start, wrote, weight * (double)chunks);
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
