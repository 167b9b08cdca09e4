/* SPDX-License-Identifier: MIT */
/*
 * kv_server.c -- a key-value server speaking a subset of the Redis
 * protocol (RESP2), one fiber per connection, so that the stock Redis
 * clients drive it unmodified.
 *
 *   kv_server [PORT [MAX_REQUEST]]   listens on 127.0.0.1:PORT (default
 *                                    6380; 0: any free port); MAX_REQUEST:
 *                                    bytes one request may take (default
 *                                    1 MiB, at least 1024)
 *
 * Commands (names in any case), as Redis answers them:
 *   PING [msg]   +PONG, or msg as a bulk string
 *   ECHO msg     msg
 *   SET key val  +OK (no options: SET with more arguments is -ERR syntax error)
 *   GET key      the value, or the null bulk string $-1
 *   DEL key...   :number of keys removed
 *   INCR key     :the new value (a missing key counts as 0); -ERR if the
 *                value is not a 64-bit integer or would overflow
 *   QUIT         +OK, then the server closes the connection
 *   CONFIG GET x *0 (empty array: no configuration to show)
 *   COMMAND ...  *0
 *   anything else: -ERR unknown command '...'
 * Requests come as RESP arrays of bulk strings (*2\r\n$3\r\nGET\r\n$1\r\nk\r\n)
 * or as inline commands (a line of words: "PING\r\n", what redis-benchmark
 * sends for PING_INLINE and what you type into telnet).
 *
 * Pipelining: every complete request in what one read brought is answered,
 * in order, and the answers go out in one write. A request is bounded:
 * one that would take more than MAX_REQUEST bytes (a bulk length or
 * array count that says so, or that many bytes without a complete
 * request) is answered with -ERR request too large ... and the connection
 * is closed; malformed RESP gets -ERR Protocol error: ... and a close, as
 * Redis does. A client that stops reading its answers holds only its own
 * fiber, for WRITE_TIMEOUT_S seconds, then is disconnected. The keys live
 * in one chained hash table (the process's only thread owns it: no locks).
 *
 * With the stock client and benchmark (apt install redis-tools), from the
 * build dir:
 *   ./examples/kv_server 6380 &
 *   redis-cli -p 6380 SET greeting hello; redis-cli -p 6380 GET greeting
 *   redis-benchmark -p 6380 -t ping,set,get -n 100000 -r 100000 -q
 *   redis-benchmark -p 6380 -t ping,set,get -n 1000000 -r 100000 -P 16 -q
 *   kill %1
 */
#define _GNU_SOURCE
#include "net_common.h"

#include <fibers/io.h>

#include <stdint.h>
#include <strings.h>

#define WRITE_TIMEOUT_S 10
#define FLUSH_AT (64 * 1024) /* write out answers once this many pile up */
#define MAX_ARGS (1024 * 1024)

static size_t max_request = 1 << 20;

/* ---------------------------------------------------------- the table */

struct entry {
  struct entry *next;
  uint64_t hash;
  char *val;
  size_t vlen, vcap;
  size_t klen;
  char key[];
};

static struct entry **buckets;
static size_t nbuckets, nkeys; /* nbuckets: a power of two */

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603u; /* FNV-1a, then a final mix */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)p[i]) * 1099511628211u;
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93u;
  return h ^ (h >> 32);
}

static struct entry **find(const char *k, size_t klen, uint64_t h) {
  struct entry **e = &buckets[h & (nbuckets - 1)];
  while (*e && !((*e)->hash == h && (*e)->klen == klen &&
                 memcmp((*e)->key, k, klen) == 0))
    e = &(*e)->next;
  return e;
}

static int grow_table(void) {
  size_t n = nbuckets ? nbuckets * 2 : 1024;
  struct entry **b = calloc(n, sizeof *b);
  if (!b)
    return -1;
  for (size_t i = 0; i < nbuckets; i++)
    for (struct entry *e = buckets[i], *next; e; e = next) {
      next = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
    }
  free(buckets);
  buckets = b;
  nbuckets = n;
  return 0;
}

/* The entry for key, made (empty) if missing; NULL: out of memory. */
static struct entry *upsert(const char *k, size_t klen) {
  uint64_t h = hash_bytes(k, klen);
  if (!nbuckets && grow_table() != 0)
    return NULL;
  struct entry **slot = find(k, klen, h);
  if (*slot)
    return *slot;
  if (nkeys >= nbuckets) {
    if (grow_table() != 0)
      return NULL;
    slot = find(k, klen, h);
  }
  struct entry *e = malloc(sizeof *e + klen);
  if (!e)
    return NULL;
  memcpy(e->key, k, klen);
  e->klen = klen;
  e->hash = h;
  e->val = NULL;
  e->vlen = e->vcap = 0;
  e->next = NULL;
  *slot = e;
  nkeys++;
  return e;
}

static int set_value(struct entry *e, const char *v, size_t vlen) {
  if (vlen > e->vcap || e->vcap > 4 * vlen + 64) {
    char *nv = malloc(vlen ? vlen : 1);
    if (!nv)
      return -1;
    free(e->val);
    e->val = nv;
    e->vcap = vlen;
  }
  if (vlen) /* an empty value may have no buffer: memcpy wants one */
    memcpy(e->val, v, vlen);
  e->vlen = vlen;
  return 0;
}

/* --------------------------------------------------------- a connection */

struct arg {
  const char *p;
  size_t len;
};

struct conn {
  int fd;
  char *in, *out;
  size_t in_len, in_cap, out_len, out_cap;
  struct arg *argv;
  size_t argc, argv_cap;
  int closing; /* answer what is out, then close (QUIT, an error) */
  int dead;    /* a write failed: the client is gone or not reading */
};

static int out_reserve(struct conn *c, size_t n) {
  return net_reserve(&c->out, &c->out_cap, c->out_len + n, 4096);
}

static void out_raw(struct conn *c, const char *p, size_t n) {
  if (out_reserve(c, n) != 0) {
    c->closing = 1; /* out of memory: give up on this client */
    return;
  }
  if (n) /* an empty value may have no buffer (NULL) */
    memcpy(c->out + c->out_len, p, n);
  c->out_len += n;
}

#define OUT_LIT(c, s) out_raw(c, s, sizeof s - 1)

static void out_int(struct conn *c, long long v) {
  char b[32];
  out_raw(c, b, (size_t)snprintf(b, sizeof b, ":%lld\r\n", v));
}

static void out_bulk(struct conn *c, const char *p, size_t n) {
  char b[32];
  out_raw(c, b, (size_t)snprintf(b, sizeof b, "$%zu\r\n", n));
  out_raw(c, p, n);
  OUT_LIT(c, "\r\n");
}

/* An error line; the text is cut short and stripped of CR/LF. */
static void out_err(struct conn *c, const char *fmt, const char *name,
                    size_t nlen) {
  char safe[64], line[160];
  size_t n = nlen < sizeof safe - 1 ? nlen : sizeof safe - 1;
  for (size_t i = 0; i < n; i++)
    safe[i] = (name[i] == '\r' || name[i] == '\n') ? ' ' : name[i];
  safe[n] = 0;
  int len = snprintf(line, sizeof line, fmt, safe);
  out_raw(c, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
}

static void too_large(struct conn *c) {
  char b[96];
  out_raw(c, b, (size_t)snprintf(b, sizeof b,
                                 "-ERR request too large (over %zu bytes)\r\n",
                                 max_request));
  c->closing = 1;
}

static int flush(struct conn *c) {
  uint64_t deadline = fib_now_ns() + (uint64_t)WRITE_TIMEOUT_S * 1000000000u;
  int err = net_write_all(c->fd, c->out, c->out_len, deadline);
  c->out_len = 0;
  c->dead = err != 0;
  return err;
}

static int is(const struct arg *a, const char *name) {
  return a->len == strlen(name) && strncasecmp(a->p, name, a->len) == 0;
}

/* Strict decimal long long (as Redis's string2ll): 0 on success. */
static int parse_ll(const char *p, size_t n, long long *out) {
  if (n == 0 || n > 20)
    return -1;
  size_t i = 0;
  int neg = p[0] == '-';
  if (neg && n == 1)
    return -1;
  i = (size_t)neg;
  if (p[i] == '0' && n > i + 1)
    return -1;
  unsigned long long v = 0;
  for (; i < n; i++) {
    if (p[i] < '0' || p[i] > '9')
      return -1;
    unsigned d = (unsigned)(p[i] - '0');
    if (v > (ULLONG_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  if (neg ? v > (unsigned long long)LLONG_MAX + 1 : v > LLONG_MAX)
    return -1;
  *out = neg ? (long long)(0 - v) : (long long)v;
  return 0;
}

static void wrong_args(struct conn *c, const struct arg *cmd) {
  char name[32];
  size_t n = cmd->len < sizeof name - 1 ? cmd->len : sizeof name - 1;
  for (size_t i = 0; i < n; i++)
    name[i] = (char)((cmd->p[i] >= 'A' && cmd->p[i] <= 'Z') ? cmd->p[i] + 32
                                                            : cmd->p[i]);
  out_err(c, "-ERR wrong number of arguments for '%s' command\r\n", name, n);
}

static void execute(struct conn *c) {
  struct arg *a = c->argv;
  size_t argc = c->argc;
  if (is(&a[0], "GET")) {
    if (argc != 2) {
      wrong_args(c, &a[0]);
      return;
    }
    uint64_t h = hash_bytes(a[1].p, a[1].len);
    struct entry *e = nbuckets ? *find(a[1].p, a[1].len, h) : NULL;
    if (e)
      out_bulk(c, e->val, e->vlen);
    else
      OUT_LIT(c, "$-1\r\n");
  } else if (is(&a[0], "SET")) {
    if (argc < 3) {
      wrong_args(c, &a[0]);
      return;
    }
    if (argc > 3) {
      OUT_LIT(c, "-ERR syntax error\r\n");
      return;
    }
    struct entry *e = upsert(a[1].p, a[1].len);
    if (!e || set_value(e, a[2].p, a[2].len) != 0)
      OUT_LIT(c, "-ERR out of memory\r\n");
    else
      OUT_LIT(c, "+OK\r\n");
  } else if (is(&a[0], "PING")) {
    if (argc > 2) {
      wrong_args(c, &a[0]);
      return;
    }
    if (argc == 2)
      out_bulk(c, a[1].p, a[1].len);
    else
      OUT_LIT(c, "+PONG\r\n");
  } else if (is(&a[0], "ECHO")) {
    if (argc != 2) {
      wrong_args(c, &a[0]);
      return;
    }
    out_bulk(c, a[1].p, a[1].len);
  } else if (is(&a[0], "DEL")) {
    if (argc < 2) {
      wrong_args(c, &a[0]);
      return;
    }
    long long removed = 0;
    for (size_t i = 1; i < argc && nbuckets; i++) {
      struct entry **slot =
          find(a[i].p, a[i].len, hash_bytes(a[i].p, a[i].len));
      if (*slot) {
        struct entry *e = *slot;
        *slot = e->next;
        free(e->val);
        free(e);
        nkeys--;
        removed++;
      }
    }
    out_int(c, removed);
  } else if (is(&a[0], "INCR")) {
    if (argc != 2) {
      wrong_args(c, &a[0]);
      return;
    }
    struct entry *e = upsert(a[1].p, a[1].len);
    long long v = 0;
    char b[24];
    if (!e) {
      OUT_LIT(c, "-ERR out of memory\r\n");
    } else if (e->val && parse_ll(e->val, e->vlen, &v) != 0) {
      OUT_LIT(c, "-ERR value is not an integer or out of range\r\n");
    } else if (v == LLONG_MAX) {
      OUT_LIT(c, "-ERR increment or decrement would overflow\r\n");
    } else {
      v++;
      if (set_value(e, b, (size_t)snprintf(b, sizeof b, "%lld", v)) != 0)
        OUT_LIT(c, "-ERR out of memory\r\n");
      else
        out_int(c, v);
    }
  } else if (is(&a[0], "QUIT")) {
    OUT_LIT(c, "+OK\r\n");
    c->closing = 1;
  } else if (is(&a[0], "CONFIG")) {
    if (argc >= 2 && is(&a[1], "GET")) {
      if (argc != 3) {
        wrong_args(c, &a[0]);
        return;
      }
      OUT_LIT(c, "*0\r\n");
    } else {
      OUT_LIT(c, "-ERR CONFIG: only CONFIG GET is supported\r\n");
    }
  } else if (is(&a[0], "COMMAND")) {
    OUT_LIT(c, "*0\r\n");
  } else {
    out_err(c, "-ERR unknown command '%s'\r\n", a[0].p, a[0].len);
  }
}

enum { NEED_MORE = 0, GOT_ONE = 1, BAD = -1, TOO_LARGE = -2 };

static int push_arg(struct conn *c, const char *p, size_t len) {
  if (c->argc == c->argv_cap) {
    size_t cap = c->argv_cap ? c->argv_cap * 2 : 8;
    struct arg *v = realloc(c->argv, cap * sizeof *v);
    if (!v)
      return -1;
    c->argv = v;
    c->argv_cap = cap;
  }
  c->argv[c->argc].p = p;
  c->argv[c->argc].len = len;
  c->argc++;
  return 0;
}

/* The line at p (up to end): its length up to the LF, or -1 if it has
 * none yet. */
static long line_at(const char *p, const char *end) {
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  if (!nl)
    return -1;
  return (long)(nl - p);
}

/* The number on a RESP header line "<type><digits>\r\n". */
static int header_num(const char *p, long len, long long *v) {
  if (len < 2 || p[len - 1] != '\r')
    return -1;
  return parse_ll(p + 1, (size_t)len - 2, v);
}

/* Parse one request at c->in[*pos..in_len) into c->argv. */
static int parse_one(struct conn *c, size_t *pos) {
  const char *p = c->in + *pos, *end = c->in + c->in_len;
  c->argc = 0;
  long len = line_at(p, end);
  if (*p != '*') { /* inline: words separated by blanks */
    if (len < 0)
      return (size_t)(end - p) >= max_request ? TOO_LARGE : NEED_MORE;
    const char *q = p, *lend = p + len;
    if (lend > p && lend[-1] == '\r')
      lend--;
    while (q < lend) {
      while (q < lend && (*q == ' ' || *q == '\t'))
        q++;
      const char *w = q;
      while (q < lend && *q != ' ' && *q != '\t')
        q++;
      if (q > w && push_arg(c, w, (size_t)(q - w)) != 0)
        return BAD;
    }
    *pos += (size_t)len + 1;
    return GOT_ONE; /* argc may be 0: an empty line, ignored */
  }
  if (len < 0)
    return (size_t)(end - p) > 32 ? BAD : NEED_MORE;
  long long n;
  if (header_num(p, len, &n) != 0 || n > MAX_ARGS)
    return BAD;
  if ((unsigned long long)n * 4 > max_request)
    return TOO_LARGE;
  const char *q = p + len + 1;
  for (long long i = 0; i < n; i++) {
    len = line_at(q, end);
    if (len < 0)
      return (size_t)(end - q) > 32 ? BAD : NEED_MORE;
    long long blen;
    if (*q != '$' || header_num(q, len, &blen) != 0 || blen < 0)
      return BAD;
    if ((unsigned long long)blen > max_request)
      return TOO_LARGE;
    q += len + 1;
    if (end - q < blen + 2)
      return NEED_MORE;
    if (q[blen] != '\r' || q[blen + 1] != '\n')
      return BAD;
    if (push_arg(c, q, (size_t)blen) != 0)
      return BAD;
    q += blen + 2;
  }
  *pos = (size_t)(q - c->in);
  return GOT_ONE;
}

static void serve(int fd) {
  struct conn c = {.fd = fd};
  c.in_cap = 4096;
  c.in = malloc(c.in_cap);
  while (c.in && !c.closing) {
    if (c.in_len == c.in_cap) { /* an incomplete request fills the buffer */
      if (c.in_cap >= max_request) {
        too_large(&c);
        break;
      }
      size_t cap = c.in_cap * 2 < max_request ? c.in_cap * 2 : max_request;
      char *p = realloc(c.in, cap);
      if (!p)
        break;
      c.in = p;
      c.in_cap = cap;
    }
    ssize_t n = fib_read(fd, c.in + c.in_len, c.in_cap - c.in_len);
    if (n <= 0)
      break;
    c.in_len += (size_t)n;
    size_t pos = 0;
    while (pos < c.in_len && !c.closing) {
      int r = parse_one(&c, &pos);
      if (r == NEED_MORE)
        break;
      if (r == TOO_LARGE) {
        too_large(&c);
      } else if (r == BAD) {
        OUT_LIT(&c, "-ERR Protocol error: malformed request\r\n");
        c.closing = 1;
      } else if (c.argc > 0) {
        execute(&c);
      }
      if (c.out_len >= FLUSH_AT && flush(&c) != 0)
        goto done;
    }
    memmove(c.in, c.in + pos, c.in_len - pos);
    c.in_len -= pos;
    if (c.out_len && flush(&c) != 0)
      goto done;
    if (c.in_len == 0 && c.in_cap > 4096) { /* give back a grown buffer */
      char *p = realloc(c.in, 4096);
      if (p) {
        c.in = p;
        c.in_cap = 4096;
      }
    }
  }
  if (c.out_len)
    flush(&c);
done:
  if (c.closing && !c.dead)
    net_linger_close(fd); /* so the client reads the last answer */
  else
    fib_close(fd);
  free(c.in);
  free(c.out);
  free(c.argv);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? net_parse_port(argv[1]) : 6380;
  if (argc > 2) {
    char *end;
    long long m = strtoll(argv[2], &end, 10);
    max_request = (*end || m < 1024) ? 0 : (size_t)m;
  }
  if (argc > 3 || port < 0 || max_request == 0) {
    fprintf(stderr,
            "usage: %s [PORT [MAX_REQUEST]]   (default 6380, 1048576; "
            "port 0: any free port)\n",
            argv[0]);
    return 2;
  }
  return net_serve("kv_server", port, serve);
}
