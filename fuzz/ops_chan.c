/* SPDX-License-Identifier: MIT */
/*
 * ops_chan.c -- channels and select from the fibers' programs. Every
 * value sent is a unique token, so the model can check that a value
 * received was sent on that channel, is received once, never after its
 * send failed, and that the buffer holds what was sent and not yet
 * received. (Not each sender's order: a value handed to a parked receiver
 * is seen by the model only when that receiver runs, which may be after
 * a later value has been received by a fiber that ran sooner.)
 */
#include "fuzz.h"

enum { OPN_SEND = 19, OPN_RECV, OPN_CLOSE, OPN_SELECT, OPN_GOT = 28,
       OPN_SENT };

#define TOKEN_TAG 0xf00d000000000000ull

/* ---- tokens */

static void set_state(uint32_t k, int state) {
  struct fz_token *T = &G.tok[k];
  struct fz_chan *C = &G.mch[T->chan];
  if (T->gen == C->gen) {
    C->nsent += (state == TK_SENT) - (T->state == TK_SENT);
    C->ninflight += (state == TK_INFLIGHT) - (T->state == TK_INFLIGHT);
  }
  T->state = (uint8_t)state;
}

/* A new value to send on channel i, or UINT32_MAX if the table is full
 * (the op is then skipped). */
static uint32_t token_new(int i, int slot) {
  if (G.ntok == FZ_MAX_TOKENS)
    return UINT32_MAX;
  uint32_t k = G.ntok++;
  G.tok[k].chan = (uint8_t)i;
  G.tok[k].slot = (int8_t)slot;
  G.tok[k].gen = G.mch[i].gen;
  G.tok[k].state = 0;
  set_state(k, TK_INFLIGHT);
  return k;
}

/* The sender's call on token k returned r. */
static void token_sent(uint32_t k, int r, int slot) {
  struct fz_token *T = &G.tok[k];
  if (r == 0) {
    fz_log(slot, OPN_SENT, T->chan, (int)k, 0);
    if (T->state == TK_INFLIGHT)
      set_state(k, TK_SENT); /* buffered, or in a receiver's hands */
    return;
  }
  FZ_CHECK(T->state != TK_RECEIVED, "fiber %d: value %u on channel %d was "
           "received, but its send failed (%s)", slot, k, T->chan,
           r < 0 ? fib_err_name(r) : "another select case was chosen");
  set_state(k, TK_FAILED);
}

static void token_received(uint64_t v, int i, int slot) {
  FZ_CHECK((v & ~0xffffffffull) == TOKEN_TAG, "fiber %d received 0x%llx "
           "from channel %d: never sent", slot, (unsigned long long)v, i);
  uint32_t k = (uint32_t)v;
  FZ_CHECK(k < G.ntok, "fiber %d received value %u: never sent", slot, k);
  struct fz_token *T = &G.tok[k];
  const struct fz_chan *C = &G.mch[i];
  fz_log(slot, OPN_GOT, i, (int)k, 0);
  /* An older generation is fine: a value handed to a parked receiver
   * before the channel was destroyed (it had no waiter left) and made
   * again is seen only when that receiver runs. */
  FZ_CHECK(T->chan == i && T->gen <= C->gen, "fiber %d received value %u "
           "from channel %d (gen %u), sent on %d (gen %u)", slot, k, i,
           C->gen, T->chan, T->gen);
  FZ_CHECK(T->state == TK_INFLIGHT || T->state == TK_SENT, "fiber %d "
           "received value %u from channel %d, which was %s", slot, k, i,
           T->state == TK_RECEIVED ? "received already"
                                   : "not delivered (its send failed)");
  set_state(k, TK_RECEIVED);
}

/* What the buffer holds: the values sent and not yet received, less those
 * handed straight to receivers still in their call, plus perhaps values
 * of senders still in theirs (a receive pulls a waiting sender's value
 * into a full buffer). */
static void chan_check(int i) {
  struct fz_chan *C = &G.mch[i];
  if (C->destroyed)
    return;
  size_t len = fib_chan_len(&G.ch[i]);
  FZ_CHECK(len <= (size_t)C->cap, "channel %d holds %zu values, capacity "
           "%d", i, len, C->cap);
  FZ_CHECK(len <= (size_t)(C->nsent + C->ninflight) &&
               len + (size_t)(C->busy + C->lost) >= (size_t)C->nsent,
           "channel %d holds %zu values; %d sent and not received, %d in "
           "flight, %d fibers in calls on it", i, len, C->nsent, C->ninflight,
           C->busy);
}

/* ---- send, receive, close */

void fz_op_chan_send(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NCH);
  struct fz_chan *C = &G.mch[i];
  int has;
  uint64_t dl = fz_deadline(b, b >> 2, &has);
  uint32_t k = token_new(i, me->slot);
  if (k == UINT32_MAX)
    return;
  uint64_t v = TOKEN_TAG | k;
  int dead = C->destroyed, closed = C->closed;
  size_t len = dead ? 0 : fib_chan_len(&G.ch[i]);
  int was = fz_enter(me, has, "fib_chan_send");
  me->call_kind = FZ_W_SEND;
  me->call_idx = i;
  C->busy++;
  int r = (b & 3) ? fib_chan_send_until(&G.ch[i], &v, dl)
                  : fib_chan_send(&G.ch[i], &v);
  C->busy--;
  int now = fz_leave(me);
  fz_log(me->slot, OPN_SEND, i, (int)b, r);
  unsigned allow;
  if (dead)
    allow = A_EINVAL | (was ? A_ECANCELED : 0);
  else if (was)
    allow = A_ECANCELED;
  else if (closed)
    allow = A_EPIPE;
  else if (len < (size_t)C->cap)
    allow = A_OK; /* room: it goes in at once */
  else
    allow = A_OK | (has ? A_ETIMEDOUT : 0) | (now ? A_ECANCELED : 0) |
            (C->closed ? A_EPIPE : 0);
  fz_expect(r, allow, "fib_chan_send", me->slot);
  token_sent(k, r, me->slot);
  chan_check(i);
}

void fz_op_chan_recv(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NCH);
  struct fz_chan *C = &G.mch[i];
  int has;
  uint64_t dl = fz_deadline(b, b >> 2, &has);
  int dead = C->destroyed, closed = C->closed;
  size_t len = dead ? 0 : fib_chan_len(&G.ch[i]);
  uint64_t v = 0;
  int was = fz_enter(me, has, "fib_chan_recv");
  me->call_kind = FZ_W_RECV;
  me->call_idx = i;
  C->busy++;
  int r = (b & 3) ? fib_chan_recv_until(&G.ch[i], &v, dl)
                  : fib_chan_recv(&G.ch[i], &v);
  C->busy--;
  int now = fz_leave(me);
  fz_log(me->slot, OPN_RECV, i, (int)b, r);
  unsigned allow;
  if (dead)
    allow = A_EINVAL | (was ? A_ECANCELED : 0);
  else if (was)
    allow = A_ECANCELED;
  else if (len > 0)
    allow = A_OK; /* a value is buffered: taken at once */
  else if (closed)
    allow = A_EPIPE; /* closed and drained */
  else
    allow = A_OK | (has ? A_ETIMEDOUT : 0) | (now ? A_ECANCELED : 0) |
            (C->closed ? A_EPIPE : 0);
  fz_expect(r, allow, "fib_chan_recv", me->slot);
  if (r == 0)
    token_received(v, i, me->slot);
  chan_check(i);
}

static void close_as(int slot, int i) {
  struct fz_chan *C = &G.mch[i];
  int r = fib_chan_close(&G.ch[i]);
  fz_log(slot, OPN_CLOSE, i, 0, r);
  fz_expect(r, C->destroyed ? A_EINVAL : C->closed ? A_EPIPE : A_OK,
            "fib_chan_close", slot);
  if (r == 0)
    C->closed = 1;
  chan_check(i);
}

/* Also destroys (and inits afresh) a channel: a third of the time. */
void fz_op_chan_close(struct fz_fiber *me, unsigned a, unsigned b) {
  int i = (int)(a % FZ_NCH);
  struct fz_chan *C = &G.mch[i];
  if ((b % 3) != 2) {
    close_as(me->slot, i);
    return;
  }
  int r;
  if (C->destroyed) {
    if (C->busy)
      return; /* a call may still be on it: no init under it */
    C->cap = (int)((b >> 2) & 3);
    r = fib_chan_init(&G.ch[i], sizeof(uint64_t), (size_t)C->cap);
    fz_expect(r, A_OK, "fib_chan_init", me->slot);
    C->destroyed = C->closed = 0;
  } else {
    r = fib_chan_destroy(&G.ch[i]);
    fz_expect(r, C->busy ? A_OK | A_EBUSY : A_OK, "fib_chan_destroy",
              me->slot);
    if (r == 0) {
      C->destroyed = 1;
      C->gen++; /* its buffered values are dropped */
      C->nsent = C->ninflight = C->lost = 0;
      FZ_CHECK(fib_chan_len(&G.ch[i]) == 0, "fib_chan_len of a destroyed "
               "channel is not 0");
    }
  }
  fz_log(me->slot, OPN_CLOSE, i, (int)b, r);
}

/* ---- select */

#define SEL_MAX 12

void fz_op_select(struct fz_fiber *me, unsigned a, unsigned b) {
  fib_select_case cases[SEL_MAX];
  uint32_t toks[SEL_MAX];
  uint64_t vals[SEL_MAX];
  size_t n = 1 + (a & 3) + ((a & 0x40) ? 8 : 0); /* > 8: heap wait nodes */
  int has;
  uint64_t dl = fz_deadline(a >> 2, b, &has);
  int ndef = 0, nchan = 0, invalid = 0, ready = 0;
  for (size_t j = 0; j < n; j++) {
    unsigned kind = (b >> (2 * (j % 4))) & 3;
    int i = (int)((j + (a >> 4)) % FZ_NCH);
    struct fz_chan *C = &G.mch[i];
    toks[j] = UINT32_MAX;
    cases[j].err = -1;
    cases[j].elem = &vals[j];
    vals[j] = 0;
    cases[j].chan = &G.ch[i];
    if (kind == 2 && (ndef == 0 || (a & 0x80))) {
      cases[j].op = FIB_SELECT_DEFAULT;
      cases[j].chan = NULL;
      ndef++;
      continue;
    }
    if (kind >= 2) { /* a case switched off: never ready */
      cases[j].op = (j & 1) ? FIB_SELECT_SEND : FIB_SELECT_RECV;
      cases[j].chan = NULL;
      continue;
    }
    nchan++;
    if (C->destroyed) {
      invalid = 1;
      cases[j].op = kind ? FIB_SELECT_SEND : FIB_SELECT_RECV;
      continue;
    }
    size_t len = fib_chan_len(&G.ch[i]);
    if (kind == 0) {
      cases[j].op = FIB_SELECT_RECV;
      ready |= C->closed || len > 0;
    } else {
      cases[j].op = FIB_SELECT_SEND;
      ready |= C->closed || len < (size_t)C->cap;
    }
  }
  if (ndef > 1)
    invalid = 1;
  for (size_t j = 0; j < n; j++) /* tokens last: none if the table is full */
    if (cases[j].op == FIB_SELECT_SEND && cases[j].chan) {
      int i = (int)(cases[j].chan - G.ch);
      toks[j] = token_new(i, me->slot);
      if (toks[j] == UINT32_MAX) { /* give them back as failed */
        for (size_t q = 0; q < j; q++)
          if (toks[q] != UINT32_MAX)
            token_sent(toks[q], FIB_ECANCELED, me->slot);
        return;
      }
      vals[j] = TOKEN_TAG | toks[j];
    }
  int was = fz_enter(me, has && !ndef, "fib_select");
  for (size_t j = 0; j < n; j++)
    if (cases[j].chan)
      G.mch[cases[j].chan - G.ch].busy++;
  int r = (a & 12) ? fib_select_until(cases, n, dl) : fib_select(cases, n);
  for (size_t j = 0; j < n; j++)
    if (cases[j].chan)
      G.mch[cases[j].chan - G.ch].busy--;
  int now = fz_leave(me);
  fz_log(me->slot, OPN_SELECT, (int)a, (int)b, r);
  unsigned allow;
  if (invalid)
    allow = A_EINVAL | (was && !ndef ? A_ECANCELED : 0);
  else if (was && !ndef)
    allow = A_ECANCELED | (!nchan && !has ? A_EDEADLK : 0);
  else if (!nchan && !ndef && !has)
    allow = A_EDEADLK;
  else if (ndef || ready)
    allow = A_INDEX;
  else
    allow = A_INDEX | (has ? A_ETIMEDOUT : 0) | (now ? A_ECANCELED : 0);
  fz_expect(r, allow, "fib_select", me->slot);
  if (r >= 0) {
    FZ_CHECK((size_t)r < n, "fib_select returned case %d of %zu", r, n);
    fib_select_case *k = &cases[r];
    if (k->op == FIB_SELECT_DEFAULT) {
      FZ_CHECK(!ready, "fib_select chose its default with a case ready");
    } else {
      FZ_CHECK(k->chan, "fib_select chose case %d, which has no channel", r);
      int i = (int)(k->chan - G.ch);
      FZ_CHECK(k->err == 0 || (k->err == FIB_EPIPE && G.mch[i].closed),
               "fib_select: case %d's err is %d, channel %d %s", r, k->err,
               i, G.mch[i].closed ? "closed" : "open");
      if (k->op == FIB_SELECT_RECV && k->err == 0)
        token_received(vals[r], i, me->slot);
    }
  }
  for (size_t j = 0; j < n; j++)
    if (toks[j] != UINT32_MAX)
      token_sent(toks[j], (int)j == r ? cases[j].err : FIB_ECANCELED,
                 me->slot);
  for (int i = 0; i < FZ_NCH; i++)
    chan_check(i);
}

/* ---- set-up, main's wake-ups, discard, tear-down */

void fz_chan_setup(unsigned cap_bits) {
  fib_chan bad;
  fz_expect(fib_chan_init(&bad, SIZE_MAX / 2, 3), A_EINVAL,
            "fib_chan_init with elem_size * capacity overflowing", FZ_MAIN);
  for (int i = 0; i < FZ_NCH; i++) {
    G.mch[i].cap = (int)((cap_bits >> (2 * i)) & 3);
    fz_expect(fib_chan_init(&G.ch[i], sizeof(uint64_t), (size_t)G.mch[i].cap),
              A_OK, "fib_chan_init", FZ_MAIN);
  }
  uint64_t v = 0;
  fz_expect(fib_chan_recv(&G.ch[0], &v), A_EPERM, "fib_chan_recv from main",
            FZ_MAIN);
  fz_expect(fib_chan_send(&G.ch[0], &v), A_EPERM, "fib_chan_send from main",
            FZ_MAIN);
}

void fz_chan_wake_from_main(void) {
  for (int i = 0; i < FZ_NCH; i++)
    if (!G.mch[i].destroyed && !G.mch[i].closed)
      close_as(FZ_MAIN, i);
}

void fz_chan_discard(void) {
  /* A discarded sender's value is not delivered, unless a receive had
   * already pulled it into the buffer: its token stays in flight, and
   * chan_check allows for both. Their calls are over. */
  for (int i = 0; i < FZ_NCH; i++) {
    chan_check(i);
    G.mch[i].lost += G.mch[i].busy; /* each may have held a value */
    G.mch[i].busy = 0;
  }
}

void fz_chan_teardown(void) {
  for (int i = 0; i < FZ_NCH; i++) {
    chan_check(i);
    fz_expect(fib_chan_destroy(&G.ch[i]),
              G.mch[i].destroyed ? A_EINVAL : A_OK,
              "fib_chan_destroy at the end", FZ_MAIN);
    fz_expect(fib_chan_close(&G.ch[i]), A_EINVAL,
              "fib_chan_close after destroy", FZ_MAIN);
  }
}
