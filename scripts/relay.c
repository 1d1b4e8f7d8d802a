// relay - a TCP byte relay on 127.0.0.1, the floor of any user-space hop
// between an iSCSI client and its target (scripts/bench-import builds and
// runs it). It parses nothing: every byte read from one side is written to
// the other, so whatever it costs is the price of the extra process and
// socket hop alone, the least an iSCSI proxy (lmtgt's imported LUN) pays.
//
// Usage: relay MODE LISTEN_PORT TARGET_PORT
//   threads  one thread per direction, blocking read(2)/write(2), 1 MiB buffer
//   splice   one thread per direction, splice(2) socket -> pipe -> socket
//            (no copy through user space), 1 MiB pipe
//   epoll    one thread for every connection and direction, non-blocking
//            sockets, level-triggered epoll, 1 MiB buffer per direction
// Every socket has TCP_NODELAY (as lmtgt and the iSCSI initiators set).
// It serves until killed; each accepted connection gets its own connection
// to 127.0.0.1:TARGET_PORT.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (1 << 20)

static int dial(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  int d = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  if (d < 0)
    return -1;
  if (connect(d, (struct sockaddr *)&a, sizeof a) != 0) {
    close(d);
    return -1;
  }
  setsockopt(d, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return d;
}

static int listen_on(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) {
    perror("relay: listen");
    exit(1);
  }
  return s;
}

// ---- threads and splice: one thread per direction
struct dir {
  int from, to;
};

static void *copy_rw(void *arg) {
  struct dir *d = arg;
  char *buf = malloc(BUF);
  for (;;) {
    ssize_t n = read(d->from, buf, BUF);
    if (n <= 0)
      break;
    for (ssize_t o = 0; o < n;) {
      ssize_t w = write(d->to, buf + o, n - o);
      if (w <= 0)
        goto out;
      o += w;
    }
  }
out:
  shutdown(d->to, SHUT_WR);
  shutdown(d->from, SHUT_RD);
  free(buf);
  free(d);
  return NULL;
}

static void *copy_splice(void *arg) {
  struct dir *d = arg;
  int p[2];
  if (pipe(p) != 0)
    goto out;
  fcntl(p[1], F_SETPIPE_SZ, BUF);
  for (;;) {
    ssize_t n = splice(d->from, NULL, p[1], NULL, BUF, SPLICE_F_MOVE);
    if (n <= 0)
      break;
    while (n > 0) {
      ssize_t w = splice(p[0], NULL, d->to, NULL, n, SPLICE_F_MOVE);
      if (w <= 0)
        goto done;
      n -= w;
    }
  }
done:
  close(p[0]);
  close(p[1]);
out:
  shutdown(d->to, SHUT_WR);
  shutdown(d->from, SHUT_RD);
  free(d);
  return NULL;
}

static void spawn(void *(*fn)(void *), int from, int to) {
  struct dir *d = malloc(sizeof *d);
  d->from = from;
  d->to = to;
  pthread_t t;
  pthread_create(&t, NULL, fn, d);
  pthread_detach(t);
}

static void serve_threads(int ls, int tport, void *(*fn)(void *)) {
  for (;;) {
    int s = accept(ls, NULL, NULL), one = 1;
    if (s < 0)
      continue;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int t = dial(tport);
    if (t < 0) {
      close(s);
      continue;
    }
    spawn(fn, s, t);
    spawn(fn, t, s);
  }
}

// ---- epoll: one thread for everything
struct half {          // one direction: bytes read from fd, waiting for peer
  int fd;              // the socket this half reads from
  struct half *peer;   // the other direction (its fd is where we write)
  char *buf;
  size_t off, len;     // pending bytes buf[off:len]
  int eof;
  int dead;            // closed; the struct stays (events of this round may name it)
};

static void watch(int ep, struct half *h, int op) {
  // h->fd is read when h has nothing pending; written (for the peer's
  // pending bytes) when the peer has some.
  struct epoll_event ev = {.data.ptr = h};
  if (h->len == h->off && !h->eof)
    ev.events |= EPOLLIN;
  if (h->peer->len > h->peer->off)
    ev.events |= EPOLLOUT;
  epoll_ctl(ep, op, h->fd, &ev);
}

static void drop(int ep, struct half *h) {
  struct half *p = h->peer;
  epoll_ctl(ep, EPOLL_CTL_DEL, h->fd, NULL);
  epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
  close(h->fd);
  close(p->fd);
  free(h->buf);
  free(p->buf);
  h->buf = p->buf = NULL;
  h->dead = p->dead = 1;
}

// flush writes h's pending bytes to the peer's socket; -1 on error.
static int flush(struct half *h) {
  while (h->off < h->len) {
    ssize_t w = write(h->peer->fd, h->buf + h->off, h->len - h->off);
    if (w < 0)
      return errno == EAGAIN ? 0 : -1;
    h->off += w;
  }
  h->off = h->len = 0;
  return 0;
}

static void serve_epoll(int ls, int tport) {
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      struct half *h = evs[i].data.ptr;
      if (h == NULL) { // the listener
        int s = accept(ls, NULL, NULL), one = 1;
        if (s < 0)
          continue;
        int t = dial(tport);
        if (t < 0) {
          close(s);
          continue;
        }
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(s, F_SETFL, O_NONBLOCK);
        fcntl(t, F_SETFL, O_NONBLOCK);
        struct half *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
        a->fd = s, b->fd = t, a->peer = b, b->peer = a;
        a->buf = malloc(BUF), b->buf = malloc(BUF);
        watch(ep, a, EPOLL_CTL_ADD);
        watch(ep, b, EPOLL_CTL_ADD);
        continue;
      }
      if (h->dead)
        continue;
      struct half *p = h->peer;
      int bad = 0;
      if (evs[i].events & EPOLLOUT)  // room on h->fd for p's bytes
        bad |= flush(p);
      if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && h->len == h->off && !h->eof) {
        ssize_t r = read(h->fd, h->buf, BUF);
        if (r == 0 || (r < 0 && errno != EAGAIN))
          bad = 1;
        else if (r > 0) {
          h->off = 0, h->len = r;
          bad |= flush(h);
        }
      }
      if (bad) {
        drop(ep, h);
        continue;
      }
      watch(ep, h, EPOLL_CTL_MOD);
      watch(ep, p, EPOLL_CTL_MOD);
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: relay threads|splice|epoll LISTEN_PORT TARGET_PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int ls = listen_on(atoi(argv[2])), tport = atoi(argv[3]);
  if (strcmp(argv[1], "threads") == 0)
    serve_threads(ls, tport, copy_rw);
  else if (strcmp(argv[1], "splice") == 0)
    serve_threads(ls, tport, copy_splice);
  else if (strcmp(argv[1], "epoll") == 0)
    serve_epoll(ls, tport);
  fprintf(stderr, "relay: unknown mode %s\n", argv[1]);
  return 2;
}
