/*
 * ws_echo: a minimal single-threaded epoll WebSocket echo server, the benchmark's ceiling.
 *
 * A measuring instrument for bench/server_bench.py, not a part of the kit: it shows what one core
 * of this kernel gives when user space does (almost) nothing but the RFC 6455 framing. Built by
 * bench/_benchlib.py with the system C compiler; no library beyond libc (SHA-1 and base64 for the
 * handshake are below).
 *
 *   ws_echo [PORT [HOST]]      PORT 0 (the default) picks a free port; HOST defaults to 127.0.0.1
 *
 * Prints {"listening": PORT} on stdout once it accepts connections, like node/echo_server.js.
 * Protocol: the HTTP/1.1 upgrade (Sec-WebSocket-Key -> Sec-WebSocket-Accept), masked client frames
 * of any length up to MAX_PAYLOAD, text/binary/continuation frames echoed frame by frame (same
 * opcode and FIN, so a fragmented message comes back fragmented), ping answered by pong, pong
 * ignored, close answered by a close with the same status code and then the TCP close. An
 * unmasked client frame, a reserved bit or an unknown opcode is a protocol error (close 1002).
 * It does not validate UTF-8 in text frames nor enforce control-frame rules: the load never sends
 * such frames, and checking them would only cost cycles the ceiling must not spend.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 512
#define READ_SIZE 65536
#define MAX_HEAD 8192
#define MAX_PAYLOAD (16u << 20)

/* ------------------------------------------------------------------ SHA-1 (FIPS 180-4) */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6; }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    unsigned char block[64];
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha1_block(h, msg + i);
    size_t rest = len - i;
    memset(block, 0, sizeof block);
    memcpy(block, msg + i, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, block);
        memset(block, 0, sizeof block);
    }
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++) block[63 - j] = (unsigned char)(bits >> (8 * j));
    sha1_block(h, block);
    for (int j = 0; j < 5; j++) {
        out[4 * j] = (unsigned char)(h[j] >> 24);
        out[4 * j + 1] = (unsigned char)(h[j] >> 16);
        out[4 * j + 2] = (unsigned char)(h[j] >> 8);
        out[4 * j + 3] = (unsigned char)h[j];
    }
}

static size_t base64(const unsigned char *in, size_t len, char *out) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < len ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? abc[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

/* ------------------------------------------------------------------ connections */

struct conn {
    int fd;
    int upgraded;
    int closing;          /* a close frame or an HTTP error is queued: close once it is sent */
    unsigned char *in;    /* bytes of an incomplete head or frame, kept between reads */
    size_t in_len;
    unsigned char *out;   /* bytes the socket did not take yet */
    size_t out_len;
};

static int epfd;
static unsigned char rbuf[READ_SIZE];
static unsigned char *wbuf; /* replies of one read, sent with one write */
static size_t wcap, wlen;

static void wbuf_put(const void *data, size_t len) {
    if (wlen + len > wcap) {
        while (wlen + len > wcap) wcap *= 2;
        wbuf = realloc(wbuf, wcap);
        if (!wbuf) { perror("realloc"); exit(1); }
    }
    memcpy(wbuf + wlen, data, len);
    wlen += len;
}

static void frame_head(unsigned char opcode_byte, uint64_t len) {
    unsigned char h[10];
    size_t n = 0;
    h[n++] = opcode_byte;
    if (len < 126) h[n++] = (unsigned char)len;
    else if (len < 65536) { h[n++] = 126; h[n++] = (unsigned char)(len >> 8); h[n++] = (unsigned char)len; }
    else { h[n++] = 127; for (int j = 7; j >= 0; j--) h[n++] = (unsigned char)(len >> (8 * j)); }
    wbuf_put(h, n);
}

static void close_conn(struct conn *c) {
    close(c->fd); /* also removes it from the epoll set */
    free(c->in);
    free(c->out);
    free(c);
}

static void queue_close(struct conn *c, uint16_t code) {
    unsigned char payload[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    frame_head(0x88, 2);
    wbuf_put(payload, 2);
    c->closing = 1;
}

/* Send wlen bytes of wbuf (after what is already pending); keep the rest and wait for EPOLLOUT.
 * Returns 0 when the connection is gone. */
static int flush(struct conn *c) {
    if (wlen == 0) return 1;
    size_t sent = 0;
    if (c->out_len == 0) {
        ssize_t n = send(c->fd, wbuf, wlen, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { wlen = 0; close_conn(c); return 0; }
        sent = n > 0 ? (size_t)n : 0;
    }
    if (sent < wlen) {
        size_t rest = wlen - sent;
        unsigned char *grown = realloc(c->out, c->out_len + rest);
        if (!grown) { perror("realloc"); exit(1); }
        memcpy(grown + c->out_len, wbuf + sent, rest);
        c->out = grown;
        c->out_len += rest;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
    wlen = 0;
    if (c->closing && c->out_len == 0) { close_conn(c); return 0; }
    return 1;
}

static void on_writable(struct conn *c) {
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) close_conn(c);
        return;
    }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
    if (c->out_len == 0) {
        if (c->closing) { close_conn(c); return; }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

/* The value of header `name` in an HTTP head (NUL-terminated), trimmed; its length in *len. */
static const char *header(const char *head, const char *name, size_t *len) {
    size_t nlen = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ' || *v == '\t') v++;
            const char *end = strstr(v, "\r\n");
            if (!end) end = v + strlen(v);
            while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
            *len = (size_t)(end - v);
            return v;
        }
    }
    return NULL;
}

static const char BAD_REQUEST[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/* Answer a complete HTTP head (head_len bytes, NUL-terminated). */
static void handshake(struct conn *c, char *head) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    size_t key_len = 0, up_len = 0;
    const char *key = header(head, "Sec-WebSocket-Key", &key_len);
    const char *up = header(head, "Upgrade", &up_len);
    if (strncmp(head, "GET ", 4) != 0 || !key || key_len == 0 || key_len > 64 || !up ||
        up_len != 9 || strncasecmp(up, "websocket", 9) != 0) {
        wbuf_put(BAD_REQUEST, sizeof BAD_REQUEST - 1);
        c->closing = 1;
        return;
    }
    unsigned char concat[64 + sizeof guid], digest[20];
    memcpy(concat, key, key_len);
    memcpy(concat + key_len, guid, sizeof guid - 1);
    sha1(concat, key_len + sizeof guid - 1, digest);
    char accept[32], reply[160];
    base64(digest, 20, accept);
    int n = snprintf(reply, sizeof reply,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    wbuf_put(reply, (size_t)n);
    c->upgraded = 1;
}

/* Consume what can be consumed of data[0..len); returns the bytes used (the rest is incomplete). */
static size_t process(struct conn *c, unsigned char *data, size_t len) {
    size_t pos = 0;
    if (!c->upgraded) {
        unsigned char *end = memmem(data, len, "\r\n\r\n", 4);
        if (!end) {
            if (len > MAX_HEAD) { wbuf_put(BAD_REQUEST, sizeof BAD_REQUEST - 1); c->closing = 1; return len; }
            return 0;
        }
        size_t head_len = (size_t)(end - data) + 4;
        char head[MAX_HEAD + 1];
        if (head_len > MAX_HEAD) { wbuf_put(BAD_REQUEST, sizeof BAD_REQUEST - 1); c->closing = 1; return len; }
        memcpy(head, data, head_len);
        head[head_len] = '\0';
        handshake(c, head);
        pos = head_len;
    }
    while (!c->closing && len - pos >= 2) {
        unsigned char b0 = data[pos], b1 = data[pos + 1];
        unsigned opcode = b0 & 0x0F;
        size_t hlen = 2;
        uint64_t plen = b1 & 0x7F;
        if (!(b1 & 0x80) || (b0 & 0x70) || (opcode > 2 && opcode < 8) || opcode > 10) {
            queue_close(c, 1002);
            return len;
        }
        if (plen == 126) {
            if (len - pos < 4) break;
            plen = (uint64_t)data[pos + 2] << 8 | data[pos + 3];
            hlen = 4;
        } else if (plen == 127) {
            if (len - pos < 10) break;
            plen = 0;
            for (int j = 0; j < 8; j++) plen = plen << 8 | data[pos + 2 + j];
            hlen = 10;
        }
        if (plen > MAX_PAYLOAD) { queue_close(c, 1009); return len; }
        if (len - pos < hlen + 4 + plen) break;
        unsigned char *mask = data + pos + hlen, *p = mask + 4;
        for (uint64_t j = 0; j < plen; j++) p[j] ^= mask[j & 3];
        pos += hlen + 4 + (size_t)plen;
        if (opcode <= 2) { /* continuation, text, binary: echo as received */
            frame_head(b0, plen);
            wbuf_put(p, (size_t)plen);
        } else if (opcode == 9) { /* ping */
            frame_head(0x8A, plen);
            wbuf_put(p, (size_t)plen);
        } else if (opcode == 8) { /* close: answer with the same status code, then close */
            frame_head(0x88, plen >= 2 ? 2 : 0);
            if (plen >= 2) wbuf_put(p, 2);
            c->closing = 1;
        } /* pong: nothing */
    }
    return c->closing ? len : pos;
}

static void on_readable(struct conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            close_conn(c);
            return;
        }
        if (n < 0) return;
        unsigned char *data = rbuf;
        size_t len = (size_t)n;
        if (c->in_len) { /* an incomplete frame or head from earlier reads comes first */
            unsigned char *grown = realloc(c->in, c->in_len + len);
            if (!grown) { perror("realloc"); exit(1); }
            memcpy(grown + c->in_len, rbuf, len);
            c->in = grown;
            data = grown;
            len += c->in_len;
        }
        size_t used = process(c, data, len);
        size_t rest = len - used;
        if (rest == 0) {
            free(c->in);
            c->in = NULL;
        } else if (data == rbuf) {
            c->in = malloc(rest);
            if (!c->in) { perror("malloc"); exit(1); }
            memcpy(c->in, rbuf + used, rest);
        } else {
            memmove(c->in, c->in + used, rest);
        }
        c->in_len = rest;
        if (!flush(c)) return;
        if ((size_t)n < sizeof rbuf) return; /* the socket is drained (level-triggered anyway) */
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    const char *host = argc > 2 ? argv[2] : "127.0.0.1";
    signal(SIGPIPE, SIG_IGN);
    wcap = READ_SIZE;
    wbuf = malloc(wcap);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "ws_echo: not an IPv4 address: %s\n", host);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("ws_echo: bind/listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    printf("{\"listening\": %d}\n", ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break; /* EAGAIN; on EMFILE the backlog waits (retried each wakeup) */
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    if (!c) { perror("calloc"); exit(1); }
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) {
                on_writable(c);
                /* on_writable may have freed c: the next event of this batch cannot be c's, since
                 * epoll reports each fd once per wait. */
                continue;
            }
            on_readable(c);
        }
    }
}
