/* cluster.c: many hosts acting as one on Redis (--redis, docs/SCALING.md): node identity and
 * presence, users and their token hashes, pushes, the outbox, rooms and broadcast cluster-wide.
 *
 * Keys (docs/SCALING.md has the reasoning and the costs):
 *   wshost:node:<node>  heartbeat, EX 10, renewed every 3 s    wshost:nodes  set of node ids
 *   wshost:nu:<node>    users live on the node (EX 600, cleaned)  wshost:un:<user> its nodes
 *   wshost:users        hash user -> token SHA-256 (hex, "" for app-bound ids), at most
 *                       --max-users entries (the longest unseen offline ones make room)
 *   wshost:useen        sorted set user -> last seen (ms): the eviction order, and what a
 *                       joining node reads (the users seen lately, not the whole hash)
 *   wshost:ob:<user>    list: the user's outbox ("<seq> <0|1><payload>"), bounded, expiring;
 *                       a push to another node is queued here too until that node acknowledged
 *   wshost:pa:<user>    hash seq -> acknowledgements the outbox row still waits for
 *   wshost:rm:<room>    hash node -> JSON [{"user_id","sockets"}] of the node's members
 * Channels: wshost:n:<node> (pushes to users on that node, "<seq> <push id> u..."; the
 * acknowledgements of the node's pushes, "k<0|1><push id>"), wshost:r:<room>, wshost:all,
 * wshost:users (the id of a new user, nothing else: every node reads its token hash from the
 * wshost:users key itself, so a message on the channel can make a node learn only what Redis
 * holds). */
#include "cluster.h"

#include "bus.h"
#include "log.h"
#include "rooms.h"
#include "sha256.h"
#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define BEAT_EVERY_S 3.0
#define NODE_TTL_S "10"
#define NODE_USERS_TTL_S "600"  /* wshost:nu:<node> outlives its heartbeat: cleaned by others */
#define BEAT_CLEAN_USERS "1000" /* users of a dead node each beat removes it from */
#define RETRY_MAX 10000         /* pushes kept across an outage while Redis had not answered */
#define MEMBERS_FRESH_MS 500    /* cloud_room_members reads other nodes at most this often */
#define UNANNOUNCED_MAX 100000  /* users created while Redis was down, announced when back */
#define ACK_WAIT_MS 1000        /* an admin push waits this long for the nodes' acknowledgements */
#define WAITING_MAX 10000       /* admin pushes waiting for acknowledgements at once, */
#define WAITING_BYTES_MAX (64u << 20) /* holding at most this; past either: answered at once */
#define JOIN_USERS_MAX 10000          /* users a (re)joining node reads at most */
#define JOIN_SLACK_MS 15000 /* a rejoin reads the users seen since its last beat minus this */
#define EVICT_SCAN "32"     /* candidates the user table in Redis looks at to make room */

/* A message on a channel: kind ('u' user, 'r' room, 'a' all), '0'/'1' binary, the sender's
 * node id (16 hex), the user or room name, '\n', the payload. */
#define MSG_HEAD (2 + 16)
#define ROOM_KEY_MAX (ROOM_NAME_MAX + 16)

struct cluster {
  struct host *h;
  struct bus *bus;
  struct cluster_ops ops;
  char node[17];
  char ch_node[32];
  ev_timer beat, room_flush;
  json_t *live;        /* node ids with a heartbeat, from the last beat */
  json_t *users;       /* user ids online anywhere, last read */
  int64_t users_ms;    /* when users was asked for (0: never) */
  json_t *rooms;       /* room -> {"at": ms asked, "m": [members on other nodes]} */
  json_t *unannounced; /* user -> token hash hex: created here while Redis was down */
  struct map held;     /* user -> pushes queued behind a local drain, not yet answered */
  struct map dirty;    /* rooms whose local membership Redis does not know yet -> 1 */
  struct map loading;  /* connection id -> 1 while its outbox read is in flight */
  struct map skipped;  /* connection id -> 1: opened while Redis was down, drains when back */
  struct push_op *retry_head, *retry_tail;
  size_t nretry;
  struct map waiting;                    /* push id -> admin push waiting for acknowledgements */
  uint64_t next_pid;                     /* push ids: an acknowledgement names the push by it */
  size_t waiting_bytes;                  /* the payloads the waiting pushes hold */
  struct push_op *wait_head, *wait_tail; /* the same, oldest first (one deadline for all) */
  ev_timer ack_timer;
  int64_t seen_ms;  /* wall clock of the last heartbeat Redis answered (0: none yet) */
  int beat_from_up; /* the beat in flight is on_up's (a registration follows it) */
};

struct push_op {
  struct cluster *cl;
  struct push_op *next;
  char mode; /* '0' local sockets took it, '1' none did, '2' a local drain holds it */
  int local;
  cluster_push_done done; /* the admin /_/push: answers once the nodes acknowledged */
  void *arg;
  uint64_t pid;       /* in waiting from its send on (0: not waiting) */
  int want;           /* nodes it was published to (-1: Redis has not answered yet) */
  int answers, acked; /* acknowledgements heard; those that say it was taken */
  int64_t deadline;   /* host_now_ms() past which it answers with what it has */
  struct push_op *wprev, *wnext;
  char user[STORE_ID_MAX + 1];
  int is_binary;
  size_t len;
  char data[];
};

/* KEYS: un:<user>, ob:<user>, pa:<user>. ARGV: self, channel message, outbox entry, mode,
 * outbox max, outbox ttl. {nodes the message reached, seq | 0 not queued | -1 full}. Whether
 * the user exists the sender knows from its own SQLite (every node has its users' rows).
 * A push that goes to another node is queued as well, with the count of acknowledgements it
 * waits for: a node that dies before it reads the message leaves the row for the user's next
 * connection, so "reached" is never said of a push a node did not take (RECEIPT_LUA). With
 * a local drain holding it (mode 2) the row is that drain's: no acknowledgement removes it. */
static const char PUSH_LUA[] =
    "local nodes = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if id ~= ARGV[1] then\n"
    "    if redis.call('EXISTS', 'wshost:node:' .. id) == 1 then nodes[#nodes + 1] = id\n"
    "    else redis.call('SREM', KEYS[1], id) end\n"
    "  end\n"
    "end\n"
    "if #nodes == 0 and ARGV[4] == '0' then return {0, 0} end\n"
    "if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[5]) then return {0, -1} end\n"
    "local seq = redis.call('INCR', 'wshost:obseq')\n"
    "redis.call('RPUSH', KEYS[2], seq .. ' ' .. ARGV[3])\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[6])\n"
    "local n = 0\n"
    "for _, id in ipairs(nodes) do\n"
    "  n = n + redis.call('PUBLISH', 'wshost:n:' .. id, seq .. ' ' .. ARGV[2])\n"
    "end\n"
    "if #nodes > 0 and ARGV[4] ~= '2' then\n"
    "  redis.call('HSET', KEYS[3], seq, #nodes)\n"
    "  redis.call('EXPIRE', KEYS[3], ARGV[6])\n"
    "end\n"
    "return {n, seq}\n";

/* KEYS: ob:<user>, pa:<user>. ARGV: seq, '1' when this node delivered it to every socket of
 * the user it has (none draining), the pusher's channel ("": it asked for none), the
 * acknowledgement, the row as queued. The last
 * acknowledgement a row waited for removes it; the pusher hears each. */
static const char RECEIPT_LUA[] =
    "if ARGV[2] == '1' and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then\n"
    "  if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then\n"
    "    redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "    redis.call('LREM', KEYS[1], 1, ARGV[5])\n"
    "  end\n"
    "end\n"
    "if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end\n"
    "return 0\n";

/* KEYS: ob:<user>. ARGV: after, max. The entries with seq > after, oldest first. */
static const char LOAD_LUA[] = "local out = {}\n"
                               "for _, it in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do\n"
                               "  local sp = string.find(it, ' ', 1, true)\n"
                               "  if tonumber(string.sub(it, 1, sp - 1)) > tonumber(ARGV[1]) then\n"
                               "    out[#out + 1] = it\n"
                               "    if #out >= tonumber(ARGV[2]) then break end\n"
                               "  end\n"
                               "end\n"
                               "return out\n";

/* KEYS: ob:<user>, pa:<user>. ARGV: upto. Drops the delivered head of the list (and what its
 * rows still waited for). */
static const char ACK_LUA[] =
    "local n = 0\n"
    "while true do\n"
    "  local it = redis.call('LINDEX', KEYS[1], 0)\n"
    "  if not it then break end\n"
    "  local sp = string.find(it, ' ', 1, true)\n"
    "  if tonumber(string.sub(it, 1, sp - 1)) > tonumber(ARGV[1]) then break end\n"
    "  redis.call('LPOP', KEYS[1])\n"
    "  redis.call('HDEL', KEYS[2], string.sub(it, 1, sp - 1))\n"
    "  n = n + 1\n"
    "end\n"
    "return n\n";

/* ARGV: user, token hash (hex, "" for an app-bound id), max users (0: no bound), now (ms).
 * 1 new, 0 known (its hash is never replaced), -1 the table is full. At the bound the users
 * seen longest ago make room, if they are live on no node and have nothing queued (a few
 * candidates per call: bounded work). Entries without a last seen (written by an older
 * version) are given the oldest one a few at a time, so they can go too. The channel says only
 * the id (see the top). */
static const char USER_LUA[] =
    "if redis.call('HEXISTS', 'wshost:users', ARGV[1]) == 1 then\n"
    "  redis.call('ZADD', 'wshost:useen', ARGV[4], ARGV[1])\n"
    "  return 0\n"
    "end\n"
    "local max = tonumber(ARGV[3])\n"
    "if max > 0 and redis.call('HLEN', 'wshost:users') >= max then\n"
    "  for _, u in ipairs(redis.call('ZRANGE', 'wshost:useen', 0, " EVICT_SCAN " - 1)) do\n"
    "    if redis.call('HLEN', 'wshost:users') < max then break end\n"
    "    local live = false\n"
    "    for _, id in ipairs(redis.call('SMEMBERS', 'wshost:un:' .. u)) do\n"
    "      if redis.call('EXISTS', 'wshost:node:' .. id) == 1 then live = true\n"
    "      else redis.call('SREM', 'wshost:un:' .. u, id) end\n"
    "    end\n"
    "    if not live and redis.call('EXISTS', 'wshost:ob:' .. u) == 0 then\n"
    "      redis.call('HDEL', 'wshost:users', u)\n"
    "      redis.call('ZREM', 'wshost:useen', u)\n"
    "      redis.call('DEL', 'wshost:pa:' .. u)\n"
    "    end\n"
    "  end\n"
    "  if redis.call('HLEN', 'wshost:users') >= max then\n"
    "    if redis.call('ZCARD', 'wshost:useen') < redis.call('HLEN', 'wshost:users') then\n"
    "      for _, u in ipairs(redis.call('HRANDFIELD', 'wshost:users', " EVICT_SCAN ")) do\n"
    "        redis.call('ZADD', 'wshost:useen', 'NX', 0, u)\n"
    "      end\n"
    "    end\n"
    "    return -1\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', 'wshost:users', ARGV[1], ARGV[2])\n"
    "redis.call('ZADD', 'wshost:useen', ARGV[4], ARGV[1])\n"
    "redis.call('PUBLISH', 'wshost:users', ARGV[1])\n"
    "return 1\n";

/* ARGV: since (ms), max. What a (re)joining node needs: the users seen since then, oldest
 * first, at most max (the newest), with their hashes: {user, hash, ...}. */
static const char JOIN_LUA[] =
    "local ids = redis.call('ZREVRANGEBYSCORE', 'wshost:useen', '+inf', ARGV[1], 'LIMIT', 0, "
    "ARGV[2])\n"
    "local out = {}\n"
    "for i = #ids, 1, -1 do\n"
    "  local h = redis.call('HGET', 'wshost:users', ids[i])\n"
    "  if h then\n"
    "    out[#out + 1] = ids[i]\n"
    "    out[#out + 1] = h\n"
    "  else redis.call('ZREM', 'wshost:useen', ids[i]) end\n"
    "end\n"
    "return out\n";

/* ARGV: self, info, ttl, ttl of the node's user set, users cleaned per beat. The heartbeat;
 * answers the live node ids. A node without a heartbeat (killed) stays in wshost:nodes until
 * its user set is gone: each beat takes a bounded bite of it and removes the dead node from
 * those users' presence sets, so presence is bounded by live users, not by every user a
 * killed node ever had (the set outlives the heartbeat for that). The last element: 1 if this
 * node still had its heartbeat, 0 if it had been taken for dead (it registers again). */
static const char BEAT_LUA[] =
    "local was = redis.call('EXISTS', 'wshost:node:' .. ARGV[1])\n"
    "redis.call('SET', 'wshost:node:' .. ARGV[1], ARGV[2], 'EX', ARGV[3])\n"
    "redis.call('SADD', 'wshost:nodes', ARGV[1])\n"
    "redis.call('EXPIRE', 'wshost:nu:' .. ARGV[1], ARGV[4])\n"
    "local live = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', 'wshost:nodes')) do\n"
    "  if redis.call('EXISTS', 'wshost:node:' .. id) == 1 then live[#live + 1] = id\n"
    "  else\n"
    "    for _, u in ipairs(redis.call('SPOP', 'wshost:nu:' .. id, ARGV[5])) do\n"
    "      redis.call('SREM', 'wshost:un:' .. u, id)\n"
    "    end\n"
    "    if redis.call('EXISTS', 'wshost:nu:' .. id) == 0 then\n"
    "      redis.call('SREM', 'wshost:nodes', id)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "live[#live + 1] = was\n"
    "return live\n";

/* KEYS: rm:<room>. The room's members per live node (node, JSON, ...); the entries of nodes
 * without a heartbeat go. */
static const char MEMBERS_LUA[] = "local out = {}\n"
                                  "local all = redis.call('HGETALL', KEYS[1])\n"
                                  "for i = 1, #all, 2 do\n"
                                  "  if redis.call('EXISTS', 'wshost:node:' .. all[i]) == 1 then\n"
                                  "    out[#out + 1] = all[i]\n"
                                  "    out[#out + 1] = all[i + 1]\n"
                                  "  else redis.call('HDEL', KEYS[1], all[i]) end\n"
                                  "end\n"
                                  "return out\n";

/* The users of every live node. */
static const char USERS_LUA[] = "local keys = {}\n"
                                "for _, id in ipairs(redis.call('SMEMBERS', 'wshost:nodes')) do\n"
                                "  if redis.call('EXISTS', 'wshost:node:' .. id) == 1 then\n"
                                "    keys[#keys + 1] = 'wshost:nu:' .. id\n"
                                "  end\n"
                                "end\n"
                                "if #keys == 0 then return {} end\n"
                                "return redis.call('SUNION', unpack(keys))\n";

/* A command from C strings (NULL ends the list). 0 or -ENOTCONN. */
static int cmd(struct cluster *cl, bus_reply_fn fn, void *arg, const char *a0, ...) {
  const char *argv[16];
  size_t lens[16];
  int argc = 0;
  va_list ap;
  va_start(ap, a0);
  for (const char *s = a0; s && argc < 16; s = va_arg(ap, const char *)) {
    argv[argc] = s;
    lens[argc++] = strlen(s);
  }
  va_end(ap);
  return bus_cmd(cl->bus, fn, arg, argc, argv, lens);
}

/* ---- pushes ---- */

static int held_get(struct cluster *cl, const char *user) {
  return (int)(intptr_t)map_get(&cl->held, user, strlen(user));
}

static void held_add(struct cluster *cl, const char *user, int d) {
  int n = held_get(cl, user) + d;
  if (n > 0)
    map_set(&cl->held, user, strlen(user), (void *)(intptr_t)n);
  else
    map_del(&cl->held, user, strlen(user));
}

static int push_send(struct push_op *op);

static void push_answer(struct push_op *op, int status, int nodes, int queued) {
  if (!op->done)
    return;
  /* The single node's answer: sockets reached here plus nodes that acknowledged (0: queued). */
  (void)queued;
  json_t *b = status == 200   ? json_pack("{si}", "delivered", op->local + nodes)
              : status == 404 ? json_pack("{ss}", "error", "no such user")
              : status == 507
                  ? json_pack("{ss}", "error", "outbox full")
                  : json_pack("{ss si}", "error", "cluster unavailable", "delivered", op->local);
  op->done(op->arg, status, b);
}

static void retry_keep(struct cluster *cl, struct push_op *op) {
  if (cl->nretry >= RETRY_MAX) {
    log_error(NULL, NULL, "cluster: push to user %s lost: %d pushes already wait for Redis",
              op->user, RETRY_MAX);
    free(op);
    return;
  }
  op->next = NULL;
  if (cl->retry_tail)
    cl->retry_tail->next = op;
  else
    cl->retry_head = op;
  cl->retry_tail = op;
  cl->nretry++;
}

/* ---- acknowledgements: an admin push waits for the nodes it was published to ---- */

static void wait_remove(struct cluster *cl, struct push_op *op) {
  if (!op->pid)
    return;
  map_del(&cl->waiting, &op->pid, sizeof op->pid);
  op->pid = 0;
  cl->waiting_bytes -= op->len;
  if (!op->deadline)
    return; /* not on the deadline list yet */
  op->deadline = 0;
  if (op->wprev)
    op->wprev->wnext = op->wnext;
  else
    cl->wait_head = op->wnext;
  if (op->wnext)
    op->wnext->wprev = op->wprev;
  else
    cl->wait_tail = op->wprev;
  op->wprev = op->wnext = NULL;
}

/* Answers with the nodes that acknowledged; the others' rows stay queued for the user. */
static void wait_finish(struct cluster *cl, struct push_op *op) {
  wait_remove(cl, op);
  push_answer(op, 200, op->acked, 1);
  free(op);
}

static void wait_add(struct cluster *cl, struct push_op *op) {
  op->deadline = host_now_ms() + ACK_WAIT_MS;
  op->wprev = cl->wait_tail;
  op->wnext = NULL;
  if (cl->wait_tail)
    cl->wait_tail->wnext = op;
  else
    cl->wait_head = op;
  cl->wait_tail = op;
  if (!ev_is_active(&cl->ack_timer)) {
    ev_timer_set(&cl->ack_timer, ACK_WAIT_MS / 1000.0, 0.);
    ev_timer_start(cl->h->loop, &cl->ack_timer);
  }
}

static void on_ack_timer(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)revents;
  struct cluster *cl = t->data;
  int64_t now = host_now_ms();
  while (cl->wait_head && cl->wait_head->deadline <= now)
    wait_finish(cl, cl->wait_head);
  if (cl->wait_head) {
    ev_timer_set(t, (double)(cl->wait_head->deadline - now) / 1000.0 + 0.001, 0.);
    ev_timer_start(loop, t);
  }
}

/* "k<0|1><push id>" on this node's channel: a node took (1) or did not take (0) the push. It
 * may come before Redis's answer to the push script (two connections): counted all the same. */
static void on_ack(struct cluster *cl, const char *data, size_t len) {
  char num[24];
  if (len < 3 || len - 2 >= sizeof num)
    return;
  memcpy(num, data + 2, len - 2);
  num[len - 2] = 0;
  uint64_t pid = strtoull(num, NULL, 10);
  struct push_op *op = pid ? map_get(&cl->waiting, &pid, sizeof pid) : NULL;
  if (!op)
    return; /* answered already (its deadline passed) */
  op->answers++;
  if (data[1] == '1')
    op->acked++;
  if (op->want >= 0 && op->answers >= op->want) /* every node it reached answered */
    wait_finish(cl, op);
}

static void push_reply(void *arg, redisReply *r) {
  struct push_op *op = arg;
  struct cluster *cl = op->cl;
  if (op->mode == '2')
    held_add(cl, op->user, -1);
  if (!r)
    wait_remove(cl, op); /* sent again, or answered 503: no acknowledgement counts */
  if (!r) {
    /* Redis went away before answering. The caller of cloud_send_to_user was told "sent":
     * keep the push and send it again when Redis is back (at least once). The admin API
     * caller is told it failed instead. */
    if (op->done) {
      push_answer(op, 503, 0, 0);
      free(op);
      return;
    }
    int kick = op->mode == '2';
    char user[STORE_ID_MAX + 1];
    memcpy(user, op->user, sizeof user);
    retry_keep(cl, op);
    if (kick) /* its drain stops waiting for it (and retries the store until Redis is back) */
      cl->ops.drain_kick(cl->h, user);
    return;
  }
  int nodes = 0;
  long long seq = 0;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
    nodes = (int)r->element[0]->integer;
    seq = r->element[1]->integer;
  } else if (r->type == REDIS_REPLY_ERROR) {
    log_error(NULL, NULL, "cluster: push to user %s failed in Redis: %s", op->user, r->str);
    seq = -3;
  }
  if (seq == -1)
    log_warn(NULL, NULL, "cluster: outbox of user %s is full: message dropped", op->user);
  /* A drain of this user on this node waited for this row. */
  if (op->mode == '2')
    cl->ops.drain_kick(cl->h, op->user);
  /* Published to other nodes: "delivered" counts those that acknowledged it, not the
   * subscribers Redis counted (a node killed now never reads it; its row stays queued). */
  if (op->pid && seq > 0 && nodes > 0) {
    op->want = nodes;
    if (op->answers >= nodes)
      wait_finish(cl, op);
    else
      wait_add(cl, op);
    return;
  }
  wait_remove(cl, op);
  push_answer(op, seq == -1 ? 507 : seq == -3 ? 503 : 200, 0, seq > 0);
  free(op);
}

static int push_send(struct push_op *op) {
  struct cluster *cl = op->cl;
  struct host *h = cl->h;
  char k_un[STORE_ID_MAX + 16], k_ob[STORE_ID_MAX + 16], k_pa[STORE_ID_MAX + 16], max[16], ttl[24];
  snprintf(k_un, sizeof k_un, "wshost:un:%s", op->user);
  snprintf(k_ob, sizeof k_ob, "wshost:ob:%s", op->user);
  snprintf(k_pa, sizeof k_pa, "wshost:pa:%s", op->user);
  snprintf(max, sizeof max, "%d", h->cfg.outbox_max > 0 ? h->cfg.outbox_max : 1000);
  snprintf(ttl, sizeof ttl, "%lld", (long long)(h->cfg.outbox_ttl > 0 ? h->cfg.outbox_ttl : 1));
  size_t ulen = strlen(op->user);
  /* An admin push waits for the acknowledgements, which name it by its id ("0 " asks none). */
  op->answers = op->acked = 0;
  op->want = -1;
  if (op->done && !op->pid && cl->waiting.count < WAITING_MAX &&
      cl->waiting_bytes + op->len <= WAITING_BYTES_MAX) {
    uint64_t pid = ++cl->next_pid;
    if (map_set(&cl->waiting, &pid, sizeof pid, op) == 0) {
      op->pid = pid;
      cl->waiting_bytes += op->len;
    }
  }
  char pfx[24];
  int plen = snprintf(pfx, sizeof pfx, "%llu ", (unsigned long long)op->pid);
  size_t mlen = (size_t)plen + MSG_HEAD + ulen + 1 + op->len;
  char *msg = malloc(mlen);
  char *entry = malloc(1 + op->len);
  if (!msg || !entry) {
    free(msg);
    free(entry);
    wait_remove(cl, op);
    return -ENOMEM;
  }
  memcpy(msg, pfx, (size_t)plen);
  char *m = msg + plen;
  m[0] = 'u';
  m[1] = op->is_binary ? '1' : '0';
  memcpy(m + 2, cl->node, 16);
  memcpy(m + MSG_HEAD, op->user, ulen);
  m[MSG_HEAD + ulen] = '\n';
  memcpy(m + MSG_HEAD + ulen + 1, op->data, op->len);
  entry[0] = op->is_binary ? '1' : '0';
  memcpy(entry + 1, op->data, op->len);
  char mode[2] = {op->mode, 0};
  const char *argv[] = {"EVAL",   PUSH_LUA, "3",   k_un, k_ob, k_pa,
                        cl->node, msg,      entry, mode, max,  ttl};
  size_t lens[12];
  for (int i = 0; i < 12; i++) /* the message and the entry are bytes, not strings */
    lens[i] = i == 7 ? mlen : i == 8 ? 1 + op->len : strlen(argv[i]);
  int rc = bus_cmd(cl->bus, push_reply, op, 12, argv, lens);
  free(msg);
  free(entry);
  if (rc < 0)
    wait_remove(cl, op);
  if (rc == 0 && op->mode == '2')
    held_add(cl, op->user, 1);
  return rc;
}

static struct push_op *push_new(struct cluster *cl, const char *user, const void *data, size_t len,
                                int is_binary, char mode) {
  struct push_op *op = calloc(1, sizeof *op + len);
  if (!op)
    return NULL;
  op->cl = cl;
  op->mode = mode;
  snprintf(op->user, sizeof op->user, "%s", user);
  op->is_binary = is_binary;
  op->len = len;
  if (len)
    memcpy(op->data, data, len);
  return op;
}

int cluster_send_to_user(struct host *h, const char *user, const void *data, size_t len,
                         int is_binary) {
  struct cluster *cl = h->cluster;
  int held = 0;
  int sent = cl->ops.user_deliver(h, user, data, len, is_binary, 0, &held);
  if (!sent && !held && store_user_exists(h->store, user) == 0)
    return CLOUD_ENOUSER;
  if (!bus_up(cl->bus))
    return sent > 0 && !held ? sent : CLOUD_EUNAVAIL;
  struct push_op *op = push_new(cl, user, data, len, is_binary, held ? '2' : sent ? '0' : '1');
  if (!op)
    return sent ? sent : CLOUD_ENOMEM;
  op->local = sent;
  if (push_send(op) < 0) {
    free(op);
    return sent && !held ? sent : CLOUD_EUNAVAIL;
  }
  return sent + held;
}

void cluster_push(struct host *h, const char *user, const void *data, size_t len, int is_binary,
                  cluster_push_done done, void *arg) {
  struct cluster *cl = h->cluster;
  int held = 0;
  int sent = cl->ops.user_deliver(h, user, data, len, is_binary, 0, &held);
  if (!sent && !held && store_user_exists(h->store, user) == 0) {
    done(arg, 404, json_pack("{ss}", "error", "no such user"));
    return;
  }
  struct push_op *op = push_new(cl, user, data, len, is_binary, held ? '2' : sent ? '0' : '1');
  if (!op) {
    done(arg, 500, json_pack("{ss}", "error", "out of memory"));
    return;
  }
  op->local = sent + held; /* a held socket gets it from the outbox it is draining */
  op->done = done;
  op->arg = arg;
  if (!bus_up(cl->bus) && bus_starting(cl->bus)) {
    retry_keep(cl, op); /* a host just started: answered once its first connection is up */
    return;
  }
  if (!bus_up(cl->bus) && sent > 0 && !held) { /* as cluster_send_to_user: local pushes work */
    done(arg, 200, json_pack("{si}", "delivered", sent));
    free(op);
    return;
  }
  if (!bus_up(cl->bus) || push_send(op) < 0) {
    push_answer(op, 503, 0, 0);
    free(op);
  }
}

/* Push seq for a user of this node, from the node `from` (16 hex). Its row is in the user's
 * outbox already: delivered to the sockets here, the row is released (RECEIPT_LUA) and the
 * pusher told; a socket of the user draining here gets it from that row; no socket here any
 * more: the row stays for the user's next connection. */
static void on_user_msg(struct cluster *cl, int64_t seq, uint64_t pid, const char *from,
                        const char *user, const char *data, size_t len, int is_binary) {
  int held = 0;
  int sent = cl->ops.user_deliver(cl->h, user, data, len, is_binary, seq, &held);
  if (held)
    cl->ops.drain_kick(cl->h, user);
  if (seq <= 0)
    return; /* a node of an older version: no row, no acknowledgement */
  char k_ob[STORE_ID_MAX + 16], k_pa[STORE_ID_MAX + 16], num[24], ch[32], ack[32];
  snprintf(k_ob, sizeof k_ob, "wshost:ob:%s", user);
  snprintf(k_pa, sizeof k_pa, "wshost:pa:%s", user);
  snprintf(num, sizeof num, "%lld", (long long)seq);
  snprintf(ch, sizeof ch, "wshost:n:%.16s", from);
  /* The pusher hears it when it asked (an admin push waits for it). */
  snprintf(ack, sizeof ack, "k%c%llu", sent > 0 || held ? '1' : '0', (unsigned long long)pid);
  if (!pid)
    ch[0] = 0;
  /* The row exactly as PUSH_LUA queued it: "<seq> <0|1><payload>" (LREM finds it in one pass). */
  int nlen = (int)strlen(num);
  char *row = malloc((size_t)nlen + 2 + len);
  if (!row)
    return; /* not acknowledged: the row stays, delivered again on the next connection */
  memcpy(row, num, (size_t)nlen);
  row[nlen] = ' ';
  row[nlen + 1] = is_binary ? '1' : '0';
  memcpy(row + nlen + 2, data, len);
  const char *argv[] = {"EVAL", RECEIPT_LUA, "2", k_ob, k_pa, num, sent > 0 && !held ? "1" : "0",
                        ch,     ack,         row};
  size_t lens[10];
  for (int i = 0; i < 9; i++)
    lens[i] = strlen(argv[i]);
  lens[9] = (size_t)nlen + 2 + len;
  int rc = bus_cmd(cl->bus, NULL, NULL, 10, argv, lens);
  free(row);
  if (rc < 0)
    log_warn(NULL, NULL, "cluster: push %lld to user %s not acknowledged: Redis went away",
             (long long)seq, user);
}

/* ---- the outbox drain ---- */

struct load_op {
  struct cluster *cl;
  uint64_t conn_id;
};

static void load_reply(void *arg, redisReply *r) {
  struct load_op *lo = arg;
  struct cluster *cl = lo->cl;
  map_del(&cl->loading, &lo->conn_id, sizeof lo->conn_id);
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    cl->ops.drain_rows(cl->h, lo->conn_id, NULL, -1);
    free(lo);
    return;
  }
  struct cluster_row *rows = calloc(r->elements ? r->elements : 1, sizeof *rows);
  int n = 0;
  for (size_t i = 0; rows && i < r->elements; i++) {
    redisReply *e = r->element[i];
    char *sp = e->type == REDIS_REPLY_STRING ? memchr(e->str, ' ', e->len) : NULL;
    if (!sp || sp + 2 > e->str + e->len)
      continue;
    rows[n].id = strtoll(e->str, NULL, 10);
    rows[n].is_binary = sp[1] == '1';
    rows[n].data = sp + 2;
    rows[n].len = (size_t)(e->str + e->len - (sp + 2));
    n++;
  }
  cl->ops.drain_rows(cl->h, lo->conn_id, rows, rows ? n : -1);
  free(rows);
  free(lo);
}

void cluster_outbox_load(struct host *h, uint64_t conn_id, const char *user, int64_t after,
                         int max) {
  struct cluster *cl = h->cluster;
  if (map_get(&cl->loading, &conn_id, sizeof conn_id))
    return; /* its answer calls drain_rows */
  if (!bus_up(cl->bus)) {
    /* Live sends must not wait behind an outbox nobody can read: the drain stops now and
     * starts again when Redis is back. */
    map_set(&cl->skipped, &conn_id, sizeof conn_id, (void *)1);
    cl->ops.drain_rows(h, conn_id, NULL, CLUSTER_ROWS_UNAVAILABLE);
    return;
  }
  struct load_op *lo = malloc(sizeof *lo);
  char key[STORE_ID_MAX + 16], a[24], m[16];
  snprintf(key, sizeof key, "wshost:ob:%s", user);
  snprintf(a, sizeof a, "%lld", (long long)after);
  snprintf(m, sizeof m, "%d", max);
  if (!lo) {
    cl->ops.drain_rows(h, conn_id, NULL, -1);
    return;
  }
  lo->cl = cl;
  lo->conn_id = conn_id;
  if (cmd(cl, load_reply, lo, "EVAL", LOAD_LUA, "1", key, a, m, NULL) < 0) {
    free(lo);
    cl->ops.drain_rows(h, conn_id, NULL, -1);
  } else
    map_set(&cl->loading, &conn_id, sizeof conn_id, (void *)1);
}

void cluster_outbox_ack(struct host *h, const char *user, int64_t upto) {
  char key[STORE_ID_MAX + 16], k_pa[STORE_ID_MAX + 16], u[24];
  snprintf(key, sizeof key, "wshost:ob:%s", user);
  snprintf(k_pa, sizeof k_pa, "wshost:pa:%s", user);
  snprintf(u, sizeof u, "%lld", (long long)upto);
  /* Not answered or lost: the rows stay and are delivered again (at least once). */
  cmd(h->cluster, NULL, NULL, "EVAL", ACK_LUA, "2", key, k_pa, u, NULL);
}

int cluster_outbox_pending(struct host *h, const char *user) {
  return held_get(h->cluster, user);
}

/* ---- users and presence ---- */

struct user_fetch {
  struct cluster *cl;
  char user[STORE_ID_MAX + 1];
};

/* USER_LUA's answer: -1 the user table in Redis is at --max-users with nothing to evict. */
static void user_announced(void *arg, redisReply *r) {
  char *user = arg;
  if (r && r->type == REDIS_REPLY_INTEGER && r->integer < 0)
    log_warn(NULL, NULL,
             "cluster: user %s resumes on this node only: the cluster's user table is at "
             "--max-users and every user in it is online or has messages queued",
             user);
  free(user);
}

/* Wall clock in ms: the last-seen order of users shared by every node (wshost:useen). */
static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int user_announce(struct cluster *cl, const char *user, const char *hex) {
  char max[24], now[24];
  snprintf(max, sizeof max, "%lld",
           (long long)(cl->h->cfg.max_users > 0 ? cl->h->cfg.max_users : 0));
  snprintf(now, sizeof now, "%lld", (long long)wall_ms());
  char *u = strdup(user);
  if (!u)
    return -ENOMEM;
  int rc = cmd(cl, user_announced, u, "EVAL", USER_LUA, "0", user, hex, max, now, NULL);
  if (rc < 0)
    free(u);
  return rc;
}

void cluster_user_created(struct host *h, const char *user, const char *token) {
  struct cluster *cl = h->cluster;
  char hex[2 * SHA256_LEN + 1] = "";
  if (token) {
    uint8_t d[SHA256_LEN];
    sha256(token, strlen(token), d);
    for (int i = 0; i < SHA256_LEN; i++)
      snprintf(hex + 2 * i, 3, "%02x", d[i]);
  }
  if (user_announce(cl, user, hex) == 0)
    return;
  /* Announced when Redis is back (bounded: past it, such users resume on this node only). */
  if (json_object_size(cl->unannounced) < UNANNOUNCED_MAX)
    json_object_set_new(cl->unannounced, user, json_string(hex));
  log_debug(NULL, NULL, "cluster: user %s known to this node only until Redis is back", user);
}

/* A user Redis holds (announced by another node, or read at join), with its token hash as the
 * wshost:users key has it: known here too, so a resume on this node checks its token locally
 * (docs/SCALING.md: the write-through choice). Inserted when absent, at --max-users as a new
 * user is; never changes a user this node has. */
static void user_import(struct cluster *cl, const char *user, const char *hex) {
  uint8_t d[SHA256_LEN];
  int have = strlen(hex) == 2 * SHA256_LEN;
  for (int i = 0; have && i < SHA256_LEN; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1)
      have = 0;
    d[i] = (uint8_t)v;
  }
  if (user_id_valid(user) && store_user_import(cl->h->store, user, have ? d : NULL) == CLOUD_EFULL)
    log_debug(NULL, NULL, "cluster: user %s not imported: --max-users reached here", user);
}

/* The HGET of an announced user's hash. */
static void user_fetched(void *arg, redisReply *r) {
  struct user_fetch *uf = arg;
  if (r && r->type == REDIS_REPLY_STRING)
    user_import(uf->cl, uf->user, r->str);
  free(uf);
}

/* A message on wshost:users: only an id, whoever sent it. What the node learns is what the
 * wshost:users key says of it (a forged message can announce nothing Redis does not hold). */
static void user_heard(struct cluster *cl, const char *data, size_t len) {
  size_t n = 0;
  while (n < len && data[n] != ' ') /* older nodes sent "<id> <hash>": the id only counts */
    n++;
  if (n == 0 || n > STORE_ID_MAX)
    return;
  struct user_fetch *uf = malloc(sizeof *uf);
  if (!uf)
    return;
  uf->cl = cl;
  memcpy(uf->user, data, n);
  uf->user[n] = 0;
  if (!user_id_valid(uf->user) || store_user_exists(cl->h->store, uf->user) != 0 ||
      cmd(cl, user_fetched, uf, "HGET", "wshost:users", uf->user, NULL) < 0)
    free(uf);
}

/* The admin API's revoke, cluster-wide: the user's entry in wshost:users becomes "-" (no hash:
 * every node that imports it from now on has no token for it) and the nodes hear the id on
 * wshost:revoked. What a node does with that it checks in Redis first (revoke_heard), so a
 * forged message revokes no one. */
static const char REVOKE_LUA[] =
    "if redis.call('HEXISTS', 'wshost:users', ARGV[1]) == 0 then return 0 end\n"
    "redis.call('HSET', 'wshost:users', ARGV[1], '-')\n"
    "redis.call('PUBLISH', 'wshost:revoked', ARGV[1])\n"
    "return 1\n";

int cluster_user_revoke(struct host *h, const char *user) {
  struct cluster *cl = h->cluster;
  return cl ? cmd(cl, NULL, NULL, "EVAL", REVOKE_LUA, "0", user, NULL) : 0;
}

static void revoke_checked(void *arg, redisReply *r) {
  struct user_fetch *uf = arg;
  struct cluster *cl = uf->cl;
  if (r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "-") &&
      store_user_revoke(cl->h->store, uf->user) > 0) {
    int n = cl->ops.user_close(cl->h, uf->user, 4001, "token revoked");
    log_warn(NULL, NULL, "cluster: the resume token of user %s was revoked; %d socket(s) closed",
             uf->user, n);
  }
  free(uf);
}

static void revoke_heard(struct cluster *cl, const char *data, size_t len) {
  struct user_fetch *uf = len && len <= STORE_ID_MAX ? malloc(sizeof *uf) : NULL;
  if (!uf)
    return;
  uf->cl = cl;
  memcpy(uf->user, data, len);
  uf->user[len] = 0;
  if (!user_id_valid(uf->user) || store_user_exists(cl->h->store, uf->user) <= 0 ||
      cmd(cl, revoke_checked, uf, "HGET", "wshost:users", uf->user, NULL) < 0)
    free(uf);
}

/* The join's read: the users seen lately, oldest first (JOIN_LUA). */
static void users_join_reply(void *arg, redisReply *r) {
  struct cluster *cl = arg;
  if (!r || r->type != REDIS_REPLY_ARRAY)
    return;
  for (size_t i = 0; i + 1 < r->elements; i += 2)
    if (r->element[i]->type == REDIS_REPLY_STRING && r->element[i + 1]->type == REDIS_REPLY_STRING)
      user_import(cl, r->element[i]->str, r->element[i + 1]->str);
}

void cluster_user_online(struct host *h, const char *user, int online) {
  struct cluster *cl = h->cluster;
  char k_un[STORE_ID_MAX + 16], k_nu[40], now[24];
  snprintf(k_un, sizeof k_un, "wshost:un:%s", user);
  snprintf(k_nu, sizeof k_nu, "wshost:nu:%s", cl->node);
  snprintf(now, sizeof now, "%lld", (long long)wall_ms());
  /* Down: the registration is redone from the live table when Redis is back. */
  cmd(cl, NULL, NULL, online ? "SADD" : "SREM", k_un, cl->node, NULL);
  cmd(cl, NULL, NULL, online ? "SADD" : "SREM", k_nu, user, NULL);
  /* Seen now: the users table in Redis makes room with those seen longest ago. */
  cmd(cl, NULL, NULL, "ZADD", "wshost:useen", "XX", now, user, NULL);
}

static void register_user(void *arg, const char *key, void *value) {
  (void)value;
  cluster_user_online(arg, key, 1);
}

static void beat_reply(void *arg, redisReply *r) {
  struct cluster *cl = arg;
  if (!r || r->type != REDIS_REPLY_ARRAY)
    return;
  cl->seen_ms = wall_ms();
  /* Taken for dead (its loop stalled past the heartbeat's TTL, or Redis lost the key): the
   * others took it out of its users' presence, so it puts itself back. on_up's own beat is
   * followed by a registration anyway. */
  int up_beat = cl->beat_from_up;
  cl->beat_from_up = 0;
  if (r->elements && r->element[r->elements - 1]->type == REDIS_REPLY_INTEGER &&
      r->element[r->elements - 1]->integer == 0 && !up_beat) {
    log_warn(NULL, NULL,
             "cluster: node %s was taken for dead (no heartbeat for %s s): "
             "registering its %zu users again",
             cl->node, NODE_TTL_S, cl->h->users.count);
    map_each(&cl->h->users, register_user, cl->h);
  }
  json_t *live = json_array();
  for (size_t i = 0; live && i < r->elements; i++)
    if (r->element[i]->type == REDIS_REPLY_STRING)
      json_array_append_new(live, json_string(r->element[i]->str));
  if (live) {
    json_decref(cl->live);
    cl->live = live;
  }
}

static void beat(struct cluster *cl) {
  char info[96];
  snprintf(info, sizeof info, "{\"pid\":%d,\"port\":%d}", (int)getpid(), cl->h->cfg.port);
  cmd(cl, beat_reply, cl, "EVAL", BEAT_LUA, "0", cl->node, info, NODE_TTL_S, NODE_USERS_TTL_S,
      BEAT_CLEAN_USERS, NULL);
}

static void on_beat(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop, (void)revents;
  struct cluster *cl = t->data;
  if (bus_up(cl->bus))
    beat(cl);
}

struct users_op {
  struct cluster *cl;
  cluster_push_done done;
  void *arg;
};

static void users_reply(void *arg, redisReply *r) {
  struct users_op *uo = arg;
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    uo->done(uo->arg, 503, json_pack("{ss}", "error", "cluster unavailable"));
    free(uo);
    return;
  }
  json_t *a = json_array();
  for (size_t i = 0; a && i < r->elements; i++)
    if (r->element[i]->type == REDIS_REPLY_STRING)
      json_array_append_new(a, json_string(r->element[i]->str));
  uo->done(uo->arg, 200,
           json_pack("{so ss so}", "users", a, "node", uo->cl->node, "nodes",
                     json_deep_copy(uo->cl->live)));
  free(uo);
}

void cluster_users(struct host *h, cluster_push_done done, void *arg) {
  struct users_op *uo = malloc(sizeof *uo);
  if (!uo) {
    done(arg, 500, json_pack("{ss}", "error", "out of memory"));
    return;
  }
  *uo = (struct users_op){h->cluster, done, arg};
  if (cmd(h->cluster, users_reply, uo, "EVAL", USERS_LUA, "0", NULL) < 0) {
    free(uo);
    done(arg, 503, json_pack("{ss}", "error", "cluster unavailable"));
  }
}

/* ---- rooms and broadcast ---- */

static void publish(struct cluster *cl, const char *channel, char kind, const char *name,
                    const void *data, size_t len, int is_binary) {
  size_t nlen = strlen(name);
  char *msg = malloc(MSG_HEAD + nlen + 1 + len);
  if (!msg)
    return;
  msg[0] = kind;
  msg[1] = is_binary ? '1' : '0';
  memcpy(msg + 2, cl->node, 16);
  memcpy(msg + MSG_HEAD, name, nlen);
  msg[MSG_HEAD + nlen] = '\n';
  if (len)
    memcpy(msg + MSG_HEAD + nlen + 1, data, len);
  const char *argv[] = {"PUBLISH", channel, msg};
  size_t lens[] = {7, strlen(channel), MSG_HEAD + nlen + 1 + len};
  int rc = bus_cmd_droppable(cl->bus, NULL, NULL, 3, argv, lens);
  if (rc == -ENOBUFS)
    log_warn(NULL, NULL,
             "cluster: %s not published (%zu bytes): more than %u bytes wait to be written to "
             "Redis",
             channel, len, BUS_MAX_UNSENT);
  else if (rc < 0)
    log_debug(NULL, NULL, "cluster: %s not published: Redis is down", channel);
  free(msg);
}

void cluster_room_send(struct host *h, const char *room, const void *data, size_t len,
                       int is_binary) {
  char ch[ROOM_KEY_MAX];
  snprintf(ch, sizeof ch, "wshost:r:%s", room);
  publish(h->cluster, ch, 'r', room, data, len, is_binary);
}

void cluster_broadcast(struct host *h, const void *data, size_t len, int is_binary) {
  publish(h->cluster, "wshost:all", 'a', "", data, len, is_binary);
}

void cluster_room_changed(struct host *h, const char *room, int exists) {
  struct cluster *cl = h->cluster;
  char ch[ROOM_KEY_MAX];
  snprintf(ch, sizeof ch, "wshost:r:%s", room);
  /* Subscribed while the room has members here: a node hears only rooms it serves. */
  if (exists)
    bus_subscribe(cl->bus, ch);
  else
    bus_unsubscribe(cl->bus, ch);
  map_set(&cl->dirty, room, strlen(room), (void *)1);
  if (!ev_is_active(&cl->room_flush))
    ev_timer_start(h->loop, &cl->room_flush);
}

struct flush_state {
  struct cluster *cl;
  int failed;
  json_t *done; /* rooms written */
};

static void flush_one(void *arg, const char *room, void *value) {
  (void)value;
  struct flush_state *f = arg;
  struct cluster *cl = f->cl;
  char key[ROOM_KEY_MAX];
  snprintf(key, sizeof key, "wshost:rm:%s", room);
  json_t *m = cl->ops.room_members_local(cl->h, room);
  char *s = m && json_array_size(m) ? json_dumps(m, JSON_COMPACT) : NULL;
  int rc = s ? cmd(cl, NULL, NULL, "HSET", key, cl->node, s, NULL)
             : cmd(cl, NULL, NULL, "HDEL", key, cl->node, NULL);
  free(s);
  json_decref(m);
  if (rc < 0)
    f->failed = 1;
  else
    json_array_append_new(f->done, json_string(room));
}

/* Writes the local members of the rooms that changed, in one batch per loop turn. */
static void on_room_flush(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop, (void)revents;
  struct cluster *cl = t->data;
  if (!bus_up(cl->bus))
    return; /* kept dirty: written when Redis is back */
  struct flush_state f = {cl, 0, json_array()};
  map_each(&cl->dirty, flush_one, &f);
  size_t i;
  json_t *v;
  json_array_foreach(f.done, i, v)
      map_del(&cl->dirty, json_string_value(v), strlen(json_string_value(v)));
  json_decref(f.done);
}

struct members_op {
  struct cluster *cl;
  char room[ROOM_NAME_MAX + 1];
};

static void members_reply(void *arg, redisReply *r) {
  struct members_op *mo = arg;
  struct cluster *cl = mo->cl;
  json_t *entry = json_object_get(cl->rooms, mo->room);
  if (r && r->type == REDIS_REPLY_ARRAY && entry) {
    json_t *all = json_array();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      const char *node = r->element[i]->str;
      if (!node || !strcmp(node, cl->node))
        continue;
      json_t *m = json_loadb(r->element[i + 1]->str, r->element[i + 1]->len, 0, NULL);
      if (json_is_array(m))
        json_array_extend(all, m);
      json_decref(m);
    }
    json_object_set_new(entry, "m", all);
  }
  free(mo);
}

json_t *cluster_room_members(struct host *h, const char *room, json_t *local) {
  struct cluster *cl = h->cluster;
  int64_t now = host_now_ms();
  json_t *entry = json_object_get(cl->rooms, room);
  if (!entry) {
    entry = json_pack("{sI s[]}", "at", (json_int_t)0, "m");
    json_object_set_new(cl->rooms, room, entry);
  }
  if (entry && now - json_integer_value(json_object_get(entry, "at")) >= MEMBERS_FRESH_MS) {
    struct members_op *mo = malloc(sizeof *mo);
    char key[ROOM_KEY_MAX];
    snprintf(key, sizeof key, "wshost:rm:%s", room);
    if (mo) {
      mo->cl = cl;
      snprintf(mo->room, sizeof mo->room, "%s", room);
      if (cmd(cl, members_reply, mo, "EVAL", MEMBERS_LUA, "1", key, NULL) < 0)
        free(mo);
      else
        json_object_set_new(entry, "at", json_integer(now));
    }
  }
  /* Merged by user: one user may have sockets in the room on several nodes. */
  json_t *remote = json_object_get(entry, "m");
  size_t i, j;
  json_t *v, *w;
  json_array_foreach(remote, i, v) {
    const char *u = json_string_value(json_object_get(v, "user_id"));
    json_int_t n = json_integer_value(json_object_get(v, "sockets"));
    int found = 0;
    json_array_foreach(local, j,
                       w) if (u && !strcmp(u, json_string_value(json_object_get(w, "user_id")))) {
      json_object_set_new(w, "sockets",
                          json_integer(json_integer_value(json_object_get(w, "sockets")) + n));
      found = 1;
    }
    if (!found && u)
      json_array_append_new(local, json_pack("{ss sI}", "user_id", u, "sockets", n));
  }
  return local;
}

/* ---- the bus's events ---- */

static void on_message(void *arg, const char *channel, const char *data, size_t len) {
  struct cluster *cl = arg;
  if (!strcmp(channel, "wshost:users")) {
    user_heard(cl, data, len);
    return;
  }
  if (!strcmp(channel, "wshost:revoked")) {
    revoke_heard(cl, data, len);
    return;
  }
  int64_t seq = 0;
  uint64_t pid = 0;
  if (!strcmp(channel, cl->ch_node)) { /* "k..." an acknowledgement, "<seq> u..." a push */
    if (len && data[0] == 'k') {
      on_ack(cl, data, len);
      return;
    }
    /* "<seq> <push id> " (a node of an older version sends neither) */
    for (int k = 0; k < 2 && len && data[0] >= '0' && data[0] <= '9'; k++) {
      size_t n = 0;
      uint64_t v = 0;
      while (n < len && n < 20 && data[n] >= '0' && data[n] <= '9')
        v = v * 10 + (uint64_t)(data[n++] - '0');
      if (!n || n >= len || data[n] != ' ')
        return;
      if (k == 0)
        seq = (int64_t)v;
      else
        pid = v;
      data += n + 1;
      len -= n + 1;
    }
  }
  if (len < MSG_HEAD + 1)
    return;
  const char *name = data + MSG_HEAD;
  const char *nl = memchr(name, '\n', len - MSG_HEAD);
  if (!nl || nl - name > STORE_ID_MAX)
    return;
  char nm[STORE_ID_MAX + 1];
  memcpy(nm, name, (size_t)(nl - name));
  nm[nl - name] = 0;
  const char *payload = nl + 1;
  size_t plen = len - (size_t)(payload - data);
  int is_binary = data[1] == '1';
  int mine = !memcmp(data + 2, cl->node, 16); /* delivered locally when it was sent */
  if (data[0] == 'u' && !mine)
    on_user_msg(cl, seq, pid, data + 2, nm, payload, plen, is_binary);
  else if (data[0] == 'r' && !mine)
    cl->ops.room_deliver(cl->h, nm, payload, plen, is_binary);
  else if (data[0] == 'a' && !mine)
    cl->ops.all_deliver(cl->h, payload, plen, is_binary);
}

static void drain_again(void *arg, const char *key, void *value) {
  struct cluster *cl = arg;
  uint64_t id;
  (void)value;
  memcpy(&id, key, sizeof id);
  cl->ops.drain_restart(cl->h, id);
}

static void on_up(void *arg) {
  struct cluster *cl = arg;
  struct host *h = cl->h;
  cl->beat_from_up = 1;
  beat(cl);
  /* Presence again from what is live here (Redis may have restarted empty, or our entries
   * expired during the outage). */
  map_each(&h->users, register_user, h);
  /* The users this node may be asked to resume: those seen since it last heard Redis (all
   * of the newest at a first join), at most what its --max-users keeps. */
  char since[24], max[24];
  int64_t want =
      h->cfg.max_users > 0 && h->cfg.max_users < JOIN_USERS_MAX ? h->cfg.max_users : JOIN_USERS_MAX;
  snprintf(since, sizeof since, "%lld", (long long)(cl->seen_ms ? cl->seen_ms - JOIN_SLACK_MS : 0));
  snprintf(max, sizeof max, "%lld", (long long)want);
  cmd(cl, users_join_reply, cl, "EVAL", JOIN_LUA, "0", since, max, NULL);
  json_t *pending = cl->unannounced;
  cl->unannounced = json_object();
  const char *user;
  json_t *hex;
  json_object_foreach(pending, user, hex) user_announce(cl, user, json_string_value(hex));
  json_decref(pending);
  /* Connections that opened during the outage read their outbox now. */
  struct map skipped = cl->skipped;
  map_init(&cl->skipped);
  map_each(&skipped, drain_again, cl);
  map_free(&skipped);
  if (cl->dirty.count && !ev_is_active(&cl->room_flush))
    ev_timer_start(h->loop, &cl->room_flush);
  /* Pushes Redis never answered go again, in their order. */
  struct push_op *op = cl->retry_head;
  size_t n = cl->nretry;
  cl->retry_head = cl->retry_tail = NULL;
  cl->nretry = 0;
  if (n)
    log_info(NULL, NULL, "cluster: sending %zu pushes again that Redis had not answered", n);
  while (op) {
    struct push_op *next = op->next;
    if (push_send(op) < 0)
      retry_keep(cl, op);
    op = next;
  }
}

static void on_down(void *arg) {
  struct cluster *cl = arg;
  /* Admin pushes waiting for the first connection are told it failed; pushes of the SDK
   * (already answered) wait for Redis. */
  struct push_op **pp = &cl->retry_head, *op;
  cl->retry_tail = NULL;
  while ((op = *pp)) {
    if (op->done) {
      *pp = op->next;
      cl->nretry--;
      push_answer(op, 503, 0, 0);
      free(op);
    } else {
      cl->retry_tail = op;
      pp = &op->next;
    }
  }
  /* Other nodes' members are unknown until Redis is back. */
  json_object_clear(cl->rooms);
}

int cluster_open(struct host *h, const struct cluster_ops *ops) {
  if (!h->cfg.redis || !*h->cfg.redis)
    return 0;
  struct cluster *cl = calloc(1, sizeof *cl);
  if (!cl)
    return -ENOMEM;
  cl->h = h;
  cl->ops = *ops;
  uint8_t raw[8];
  if (getrandom(raw, sizeof raw, 0) != sizeof raw) {
    free(cl);
    return -EIO;
  }
  for (int i = 0; i < 8; i++)
    snprintf(cl->node + 2 * i, 3, "%02x", raw[i]);
  snprintf(cl->ch_node, sizeof cl->ch_node, "wshost:n:%s", cl->node);
  /* Push ids start at a random point: an acknowledgement is only counted for an id the
   * pushing node handed out, which a client that may PUBLISH but not SUBSCRIBE cannot see
   * or guess (a forged "delivered"). */
  uint64_t start;
  if (getrandom(&start, sizeof start, 0) != sizeof start) {
    free(cl);
    return -EIO;
  }
  cl->next_pid = (start >> 2) | 1;
  cl->live = json_array();
  cl->rooms = json_object();
  cl->unannounced = json_object();
  map_init(&cl->held);
  map_init(&cl->dirty);
  map_init(&cl->loading);
  map_init(&cl->skipped);
  map_init(&cl->waiting);
  ev_timer_init(&cl->ack_timer, on_ack_timer, ACK_WAIT_MS / 1000.0, 0.);
  cl->ack_timer.data = cl;
  struct bus_hooks hooks = {cl, on_up, on_down, on_message};
  int rc = bus_open(h->loop, h->cfg.redis, h->cfg.redis_password, &hooks, &cl->bus);
  if (rc < 0) {
    json_decref(cl->live);
    json_decref(cl->rooms);
    json_decref(cl->unannounced);
    free(cl);
    return rc;
  }
  bus_subscribe(cl->bus, cl->ch_node);
  bus_subscribe(cl->bus, "wshost:all");
  bus_subscribe(cl->bus, "wshost:users");
  bus_subscribe(cl->bus, "wshost:revoked");
  ev_timer_init(&cl->beat, on_beat, BEAT_EVERY_S, BEAT_EVERY_S);
  cl->beat.data = cl;
  ev_timer_start(h->loop, &cl->beat);
  ev_unref(h->loop);
  ev_timer_init(&cl->room_flush, on_room_flush, 0.02, 0.);
  cl->room_flush.data = cl;
  h->cluster = cl;
  log_info(NULL, NULL, "cluster: node %s joining", cl->node); /* the URL may hold a password */
  return 0;
}

void cluster_close(struct host *h) {
  struct cluster *cl = h->cluster;
  if (!cl)
    return;
  ev_ref(h->loop);
  ev_timer_stop(h->loop, &cl->beat);
  ev_timer_stop(h->loop, &cl->room_flush);
  ev_timer_stop(h->loop, &cl->ack_timer);
  bus_close(cl->bus); /* replies still due arrive as NULL: retried pushes land on the list */
  for (struct push_op *op = cl->retry_head, *next; op; op = next) {
    next = op->next;
    push_answer(op, 503, 0, 0); /* an admin push lets go of its deferred response */
    free(op);
  }
  if (cl->nretry)
    log_warn(NULL, NULL, "cluster: %zu pushes never reached Redis", cl->nretry);
  while (cl->wait_head) /* queued in Redis: answered with the nodes that acknowledged so far */
    wait_finish(cl, cl->wait_head);
  map_free(&cl->waiting);
  map_free(&cl->held);
  map_free(&cl->dirty);
  map_free(&cl->loading);
  map_free(&cl->skipped);
  json_decref(cl->live);
  json_decref(cl->rooms);
  json_decref(cl->unannounced);
  free(cl);
  h->cluster = NULL;
}
