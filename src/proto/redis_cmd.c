/*
 * proto/redis_cmd.c: redis-server 7.0.15's command table (arity, key
 * positions and flags as its COMMAND INFO reports them; see
 * test/data/redis/measure_command_info.py) with the class the proxy gives
 * each command, and the case-insensitive lookup the worker does per
 * request. Pure: const data and an index built before main; any thread.
 */
#include "walnut/proto_resp.h"

#include "walnut/core.h"

#include <string.h>

/* Why a command is refused (the tail of the proxy's error reply). */
static const char R_TX[] = "transactions need a dedicated server connection";
static const char R_PUBSUB[] = "pub/sub needs a dedicated server connection";
static const char R_BLOCKING[] = "blocking commands would stall a shared server connection";
static const char R_KEYSPACE[] = "the keyspace is spread over all servers";
static const char R_ONE_SERVER[] = "it describes one server; ask that server directly";
static const char R_ADMIN[] = "server administration goes to each server directly";
static const char R_SCRIPTS[] = "scripts and functions are managed on each server directly";
static const char R_CLUSTER[] = "walnut is not a Redis Cluster node";
static const char R_STREAMS[] = "streams are not supported";
static const char R_MOVE[] =
    "walnut serves one database per pool (redis_db); the key would leave it";

#define W WN_RCMD_F_WRITE
#define RO WN_RCMD_F_READONLY
#define MV WN_RCMD_F_MOVABLE
#define NC WN_RCMD_F_NC
/* The reply's type byte, whatever the arguments and the data (an error
 * aside); ANY where it depends on them (SET ... GET, ZADD ... INCR, LPOS,
 * a count, STORE, scripts) or where the proxy never forwards the command. */
#define INT ':'
#define ST '+'
#define BLK '$'
#define ARR '*'
#define ANY 0

#define C(up, nm, ar, cl, fl, first, last, step, numkeys, rt, reason)                              \
    [WN_RCMD_ID_##up] = {.name = nm,                                                               \
                         .unsupported_reason = reason,                                             \
                         .reply = rt,                                                              \
                         .arity = ar,                                                              \
                         .id = WN_RCMD_ID_##up,                                                    \
                         .cls = WN_RCMD_##cl,                                                      \
                         .flags = fl,                                                              \
                         .first_key = first,                                                       \
                         .last_key = last,                                                         \
                         .key_step = step,                                                         \
                         .numkeys_at = numkeys,                                                    \
                         .name_len = sizeof(nm) - 1}

/*
 * One row per command: name, arity, class, flags, first key, last key, key
 * step, numkeys arg (all measured but the class and NC), reply type (from
 * redis-server 7.0's code, checked against it: every marked command under
 * its options, on missing and present keys), and why an UNSUPPORTED
 * command is refused. KEY rows without NC are walnut's additions: single-key
 * commands twemproxy 0.5.0 predates.
 */
/* clang-format off */
static const wn_rcmd_t table[WN_RCMD_COUNT] = {
    C(ACL, "acl", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(APPEND, "append", 3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(ASKING, "asking", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_CLUSTER),
    C(AUTH, "auth", -2, LOCAL, NC, 0, 0, 0, 0, ANY, NULL),
    C(BGREWRITEAOF, "bgrewriteaof", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(BGSAVE, "bgsave", -1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(BITCOUNT, "bitcount", -2, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(BITFIELD, "bitfield", -2, KEY, W|NC, 1, 1, 1, 0, ARR, NULL),
    C(BITFIELD_RO, "bitfield_ro", -2, KEY, RO, 1, 1, 1, 0, ARR, NULL),
    C(BITOP, "bitop", -4, ALL_KEYS_ONE_SERVER, W, 2, -1, 1, 0, INT, NULL),
    C(BITPOS, "bitpos", -3, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(BLMOVE, "blmove", 6, UNSUPPORTED, W, 1, 2, 1, 0, ANY, R_BLOCKING),
    C(BLMPOP, "blmpop", -5, UNSUPPORTED, W|MV, 0, 0, 0, 2, ANY, R_BLOCKING),
    C(BLPOP, "blpop", -3, UNSUPPORTED, W, 1, -2, 1, 0, ANY, R_BLOCKING),
    C(BRPOP, "brpop", -3, UNSUPPORTED, W, 1, -2, 1, 0, ANY, R_BLOCKING),
    C(BRPOPLPUSH, "brpoplpush", 4, UNSUPPORTED, W, 1, 2, 1, 0, ANY, R_BLOCKING),
    C(BZMPOP, "bzmpop", -5, UNSUPPORTED, W|MV, 0, 0, 0, 2, ANY, R_BLOCKING),
    C(BZPOPMAX, "bzpopmax", -3, UNSUPPORTED, W, 1, -2, 1, 0, ANY, R_BLOCKING),
    C(BZPOPMIN, "bzpopmin", -3, UNSUPPORTED, W, 1, -2, 1, 0, ANY, R_BLOCKING),
    C(CLIENT, "client", -2, LOCAL, 0, 0, 0, 0, 0, ANY, NULL),
    C(CLUSTER, "cluster", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_CLUSTER),
    C(COMMAND, "command", -1, KEYLESS, NC, 0, 0, 0, 0, ANY, NULL),
    C(CONFIG, "config", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(COPY, "copy", -3, KEY, W|NC, 1, 2, 1, 0, INT, NULL),
    C(DBSIZE, "dbsize", 1, UNSUPPORTED, RO, 0, 0, 0, 0, ANY, R_KEYSPACE),
    C(DEBUG, "debug", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(DECR, "decr", 2, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(DECRBY, "decrby", 3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(DEL, "del", -2, MULTI_KEY, W|NC, 1, -1, 1, 0, INT, NULL),
    C(DISCARD, "discard", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_TX),
    C(DUMP, "dump", 2, KEY, RO|NC, 1, 1, 1, 0, BLK, NULL),
    C(ECHO, "echo", 2, LOCAL, 0, 0, 0, 0, 0, ANY, NULL),
    C(EVAL, "eval", -3, SCRIPT, MV|NC, 0, 0, 0, 2, ANY, NULL),
    C(EVAL_RO, "eval_ro", -3, SCRIPT, RO|MV, 0, 0, 0, 2, ANY, NULL),
    C(EVALSHA, "evalsha", -3, SCRIPT, MV|NC, 0, 0, 0, 2, ANY, NULL),
    C(EVALSHA_RO, "evalsha_ro", -3, SCRIPT, RO|MV, 0, 0, 0, 2, ANY, NULL),
    C(EXEC, "exec", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_TX),
    C(EXISTS, "exists", -2, MULTI_KEY, RO|NC, 1, -1, 1, 0, INT, NULL),
    C(EXPIRE, "expire", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(EXPIREAT, "expireat", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(EXPIRETIME, "expiretime", 2, KEY, RO, 1, 1, 1, 0, INT, NULL),
    C(FAILOVER, "failover", -1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(FCALL, "fcall", -3, SCRIPT, MV, 0, 0, 0, 2, ANY, NULL),
    C(FCALL_RO, "fcall_ro", -3, SCRIPT, RO|MV, 0, 0, 0, 2, ANY, NULL),
    C(FLUSHALL, "flushall", -1, UNSUPPORTED, W, 0, 0, 0, 0, ANY, R_KEYSPACE),
    C(FLUSHDB, "flushdb", -1, UNSUPPORTED, W, 0, 0, 0, 0, ANY, R_KEYSPACE),
    C(FUNCTION, "function", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_SCRIPTS),
    C(GEOADD, "geoadd", -5, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(GEODIST, "geodist", -4, KEY, RO|NC, 1, 1, 1, 0, BLK, NULL),
    C(GEOHASH, "geohash", -2, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(GEOPOS, "geopos", -2, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(GEORADIUS, "georadius", -6, KEY, W|MV|NC, 1, 1, 1, 0, ANY, NULL),
    C(GEORADIUS_RO, "georadius_ro", -6, KEY, RO, 1, 1, 1, 0, ARR, NULL),
    C(GEORADIUSBYMEMBER, "georadiusbymember", -5, KEY, W|MV|NC, 1, 1, 1, 0, ANY, NULL),
    C(GEORADIUSBYMEMBER_RO, "georadiusbymember_ro", -5, KEY, RO, 1, 1, 1, 0, ARR, NULL),
    C(GEOSEARCH, "geosearch", -7, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(GEOSEARCHSTORE, "geosearchstore", -8, KEY, W|NC, 1, 2, 1, 0, INT, NULL),
    C(GET, "get", 2, KEY, RO|NC, 1, 1, 1, 0, BLK, NULL),
    C(GETBIT, "getbit", 3, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(GETDEL, "getdel", 2, KEY, W|NC, 1, 1, 1, 0, BLK, NULL),
    C(GETEX, "getex", -2, KEY, W|NC, 1, 1, 1, 0, BLK, NULL),
    C(GETRANGE, "getrange", 4, KEY, RO|NC, 1, 1, 1, 0, BLK, NULL),
    C(GETSET, "getset", 3, KEY, W|NC, 1, 1, 1, 0, BLK, NULL),
    C(HDEL, "hdel", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(HELLO, "hello", -1, LOCAL, 0, 0, 0, 0, 0, ANY, NULL),
    C(HEXISTS, "hexists", 3, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(HGET, "hget", 3, KEY, RO|NC, 1, 1, 1, 0, BLK, NULL),
    C(HGETALL, "hgetall", 2, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(HINCRBY, "hincrby", 4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(HINCRBYFLOAT, "hincrbyfloat", 4, KEY, W|NC, 1, 1, 1, 0, BLK, NULL),
    C(HKEYS, "hkeys", 2, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(HLEN, "hlen", 2, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(HMGET, "hmget", -3, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(HMSET, "hmset", -4, KEY, W|NC, 1, 1, 1, 0, ST, NULL),
    C(HRANDFIELD, "hrandfield", -2, KEY, RO|NC, 1, 1, 1, 0, ANY, NULL),
    C(HSCAN, "hscan", -3, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(HSET, "hset", -4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(HSETNX, "hsetnx", 4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(HSTRLEN, "hstrlen", 3, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(HVALS, "hvals", 2, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(INCR, "incr", 2, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(INCRBY, "incrby", 3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(INCRBYFLOAT, "incrbyfloat", 3, KEY, W|NC, 1, 1, 1, 0, BLK, NULL),
    C(INFO, "info", -1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ONE_SERVER),
    C(KEYS, "keys", 2, UNSUPPORTED, RO, 0, 0, 0, 0, ANY, R_KEYSPACE),
    C(LASTSAVE, "lastsave", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ONE_SERVER),
    C(LATENCY, "latency", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ONE_SERVER),
    C(LCS, "lcs", -3, ALL_KEYS_ONE_SERVER, RO, 1, 2, 1, 0, ANY, NULL),
    C(LINDEX, "lindex", 3, KEY, RO|NC, 1, 1, 1, 0, BLK, NULL),
    C(LINSERT, "linsert", 5, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(LLEN, "llen", 2, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(LMOVE, "lmove", 5, KEY, W|NC, 1, 2, 1, 0, BLK, NULL),
    C(LMPOP, "lmpop", -4, ALL_KEYS_ONE_SERVER, W|MV, 0, 0, 0, 1, ARR, NULL),
    C(LOLWUT, "lolwut", -1, KEYLESS, RO|NC, 0, 0, 0, 0, ANY, NULL),
    C(LPOP, "lpop", -2, KEY, W|NC, 1, 1, 1, 0, ANY, NULL),
    C(LPOS, "lpos", -3, KEY, RO|NC, 1, 1, 1, 0, ANY, NULL),
    C(LPUSH, "lpush", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(LPUSHX, "lpushx", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(LRANGE, "lrange", 4, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(LREM, "lrem", 4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(LSET, "lset", 4, KEY, W|NC, 1, 1, 1, 0, ST, NULL),
    C(LTRIM, "ltrim", 4, KEY, W|NC, 1, 1, 1, 0, ST, NULL),
    C(MEMORY, "memory", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ONE_SERVER),
    C(MGET, "mget", -2, MULTI_KEY, RO|NC, 1, -1, 1, 0, ARR, NULL),
    C(MIGRATE, "migrate", -6, UNSUPPORTED, W|MV, 3, 3, 1, 0, ANY, R_CLUSTER),
    C(MODULE, "module", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(MONITOR, "monitor", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(MOVE, "move", 3, UNSUPPORTED, W|NC, 1, 1, 1, 0, ANY, R_MOVE),
    C(MSET, "mset", -3, MULTI_KV, W|NC, 1, -1, 2, 0, ST, NULL),
    C(MSETNX, "msetnx", -3, ALL_KEYS_ONE_SERVER, W, 1, -1, 2, 0, INT, NULL),
    C(MULTI, "multi", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_TX),
    C(OBJECT, "object", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ONE_SERVER),
    C(PERSIST, "persist", 2, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(PEXPIRE, "pexpire", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(PEXPIREAT, "pexpireat", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(PEXPIRETIME, "pexpiretime", 2, KEY, RO, 1, 1, 1, 0, INT, NULL),
    C(PFADD, "pfadd", -2, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(PFCOUNT, "pfcount", -2, KEY, RO|NC, 1, -1, 1, 0, INT, NULL),
    C(PFDEBUG, "pfdebug", 3, UNSUPPORTED, W, 2, 2, 1, 0, ANY, R_ADMIN),
    C(PFMERGE, "pfmerge", -2, KEY, W|NC, 1, -1, 1, 0, ST, NULL),
    C(PFSELFTEST, "pfselftest", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(PING, "ping", -1, LOCAL, NC, 0, 0, 0, 0, ANY, NULL),
    C(PSETEX, "psetex", 4, KEY, W|NC, 1, 1, 1, 0, ST, NULL),
    C(PSUBSCRIBE, "psubscribe", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_PUBSUB),
    C(PSYNC, "psync", -3, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(PTTL, "pttl", 2, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(PUBLISH, "publish", 3, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_PUBSUB),
    C(PUBSUB, "pubsub", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_PUBSUB),
    C(PUNSUBSCRIBE, "punsubscribe", -1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_PUBSUB),
    C(QUIT, "quit", -1, LOCAL, NC, 0, 0, 0, 0, ANY, NULL),
    C(RANDOMKEY, "randomkey", 1, UNSUPPORTED, RO, 0, 0, 0, 0, ANY, R_KEYSPACE),
    C(READONLY, "readonly", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_CLUSTER),
    C(READWRITE, "readwrite", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_CLUSTER),
    C(RENAME, "rename", 3, ALL_KEYS_ONE_SERVER, W, 1, 2, 1, 0, ST, NULL),
    C(RENAMENX, "renamenx", 3, ALL_KEYS_ONE_SERVER, W, 1, 2, 1, 0, INT, NULL),
    C(REPLCONF, "replconf", -1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(REPLICAOF, "replicaof", 3, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(RESET, "reset", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(RESTORE, "restore", -4, KEY, W|NC, 1, 1, 1, 0, ST, NULL),
    C(RESTORE_ASKING, "restore-asking", -4, UNSUPPORTED, W, 1, 1, 1, 0, ANY, R_CLUSTER),
    C(ROLE, "role", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ONE_SERVER),
    C(RPOP, "rpop", -2, KEY, W|NC, 1, 1, 1, 0, ANY, NULL),
    C(RPOPLPUSH, "rpoplpush", 3, KEY, W|NC, 1, 2, 1, 0, BLK, NULL),
    C(RPUSH, "rpush", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(RPUSHX, "rpushx", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(SADD, "sadd", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(SAVE, "save", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(SCAN, "scan", -2, UNSUPPORTED, RO, 0, 0, 0, 0, ANY, R_KEYSPACE),
    C(SCARD, "scard", 2, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(SCRIPT, "script", -2, EVERY_SERVER, 0, 0, 0, 0, 0, ANY, NULL),
    C(SDIFF, "sdiff", -2, KEY, RO|NC, 1, -1, 1, 0, ARR, NULL),
    C(SDIFFSTORE, "sdiffstore", -3, KEY, W|NC, 1, -1, 1, 0, INT, NULL),
    C(SELECT, "select", 2, LOCAL, 0, 0, 0, 0, 0, ANY, NULL),
    C(SET, "set", -3, KEY, W|NC, 1, 1, 1, 0, ANY, NULL),
    C(SETBIT, "setbit", 4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(SETEX, "setex", 4, KEY, W|NC, 1, 1, 1, 0, ST, NULL),
    C(SETNX, "setnx", 3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(SETRANGE, "setrange", 4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(SHUTDOWN, "shutdown", -1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(SINTER, "sinter", -2, KEY, RO|NC, 1, -1, 1, 0, ARR, NULL),
    C(SINTERCARD, "sintercard", -3, ALL_KEYS_ONE_SERVER, RO|MV, 0, 0, 0, 1, INT, NULL),
    C(SINTERSTORE, "sinterstore", -3, KEY, W|NC, 1, -1, 1, 0, INT, NULL),
    C(SISMEMBER, "sismember", 3, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(SLAVEOF, "slaveof", 3, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(SLOWLOG, "slowlog", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ONE_SERVER),
    C(SMEMBERS, "smembers", 2, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(SMISMEMBER, "smismember", -3, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(SMOVE, "smove", 4, KEY, W|NC, 1, 2, 1, 0, INT, NULL),
    C(SORT, "sort", -2, KEY, W|MV|NC, 1, 1, 1, 0, ANY, NULL),
    C(SORT_RO, "sort_ro", -2, KEY, RO|MV, 1, 1, 1, 0, ARR, NULL),
    C(SPOP, "spop", -2, KEY, W|NC, 1, 1, 1, 0, ANY, NULL),
    C(SPUBLISH, "spublish", 3, UNSUPPORTED, 0, 1, 1, 1, 0, ANY, R_PUBSUB),
    C(SRANDMEMBER, "srandmember", -2, KEY, RO|NC, 1, 1, 1, 0, ANY, NULL),
    C(SREM, "srem", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(SSCAN, "sscan", -3, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(SSUBSCRIBE, "ssubscribe", -2, UNSUPPORTED, 0, 1, -1, 1, 0, ANY, R_PUBSUB),
    C(STRLEN, "strlen", 2, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(SUBSCRIBE, "subscribe", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_PUBSUB),
    C(SUBSTR, "substr", 4, KEY, RO, 1, 1, 1, 0, BLK, NULL),
    C(SUNION, "sunion", -2, KEY, RO|NC, 1, -1, 1, 0, ARR, NULL),
    C(SUNIONSTORE, "sunionstore", -3, KEY, W|NC, 1, -1, 1, 0, INT, NULL),
    C(SUNSUBSCRIBE, "sunsubscribe", -1, UNSUPPORTED, 0, 1, -1, 1, 0, ANY, R_PUBSUB),
    C(SWAPDB, "swapdb", 3, UNSUPPORTED, W, 0, 0, 0, 0, ANY, R_KEYSPACE),
    C(SYNC, "sync", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ADMIN),
    C(TIME, "time", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_ONE_SERVER),
    C(TOUCH, "touch", -2, MULTI_KEY, RO|NC, 1, -1, 1, 0, INT, NULL),
    C(TTL, "ttl", 2, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(TYPE, "type", 2, KEY, RO|NC, 1, 1, 1, 0, ST, NULL),
    C(UNLINK, "unlink", -2, MULTI_KEY, W|NC, 1, -1, 1, 0, INT, NULL),
    C(UNSUBSCRIBE, "unsubscribe", -1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_PUBSUB),
    C(UNWATCH, "unwatch", 1, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_TX),
    C(WAIT, "wait", 3, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_BLOCKING),
    C(WATCH, "watch", -2, UNSUPPORTED, 0, 1, -1, 1, 0, ANY, R_TX),
    C(XACK, "xack", -4, UNSUPPORTED, W, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XADD, "xadd", -5, UNSUPPORTED, W, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XAUTOCLAIM, "xautoclaim", -6, UNSUPPORTED, W, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XCLAIM, "xclaim", -6, UNSUPPORTED, W, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XDEL, "xdel", -3, UNSUPPORTED, W, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XGROUP, "xgroup", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_STREAMS),
    C(XINFO, "xinfo", -2, UNSUPPORTED, 0, 0, 0, 0, 0, ANY, R_STREAMS),
    C(XLEN, "xlen", 2, UNSUPPORTED, RO, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XPENDING, "xpending", -3, UNSUPPORTED, RO, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XRANGE, "xrange", -4, UNSUPPORTED, RO, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XREAD, "xread", -4, UNSUPPORTED, RO|MV, 0, 0, 0, 0, ANY, R_STREAMS),
    C(XREADGROUP, "xreadgroup", -7, UNSUPPORTED, W|MV, 0, 0, 0, 0, ANY, R_STREAMS),
    C(XREVRANGE, "xrevrange", -4, UNSUPPORTED, RO, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XSETID, "xsetid", -3, UNSUPPORTED, W, 1, 1, 1, 0, ANY, R_STREAMS),
    C(XTRIM, "xtrim", -4, UNSUPPORTED, W, 1, 1, 1, 0, ANY, R_STREAMS),
    C(ZADD, "zadd", -4, KEY, W|NC, 1, 1, 1, 0, ANY, NULL),
    C(ZCARD, "zcard", 2, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(ZCOUNT, "zcount", 4, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(ZDIFF, "zdiff", -3, KEY, RO|MV|NC, 0, 0, 0, 1, ARR, NULL),
    C(ZDIFFSTORE, "zdiffstore", -4, KEY, W|MV|NC, 1, 1, 1, 2, INT, NULL),
    C(ZINCRBY, "zincrby", 4, KEY, W|NC, 1, 1, 1, 0, BLK, NULL),
    C(ZINTER, "zinter", -3, KEY, RO|MV|NC, 0, 0, 0, 1, ARR, NULL),
    C(ZINTERCARD, "zintercard", -3, ALL_KEYS_ONE_SERVER, RO|MV, 0, 0, 0, 1, INT, NULL),
    C(ZINTERSTORE, "zinterstore", -4, KEY, W|MV|NC, 1, 1, 1, 2, INT, NULL),
    C(ZLEXCOUNT, "zlexcount", 4, KEY, RO|NC, 1, 1, 1, 0, INT, NULL),
    C(ZMPOP, "zmpop", -4, ALL_KEYS_ONE_SERVER, W|MV, 0, 0, 0, 1, ARR, NULL),
    C(ZMSCORE, "zmscore", -3, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZPOPMAX, "zpopmax", -2, KEY, W|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZPOPMIN, "zpopmin", -2, KEY, W|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZRANDMEMBER, "zrandmember", -2, KEY, RO|NC, 1, 1, 1, 0, ANY, NULL),
    C(ZRANGE, "zrange", -4, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZRANGEBYLEX, "zrangebylex", -4, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZRANGEBYSCORE, "zrangebyscore", -4, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZRANGESTORE, "zrangestore", -5, KEY, W|NC, 1, 2, 1, 0, INT, NULL),
    C(ZRANK, "zrank", 3, KEY, RO|NC, 1, 1, 1, 0, ANY, NULL),
    C(ZREM, "zrem", -3, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(ZREMRANGEBYLEX, "zremrangebylex", 4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(ZREMRANGEBYRANK, "zremrangebyrank", 4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(ZREMRANGEBYSCORE, "zremrangebyscore", 4, KEY, W|NC, 1, 1, 1, 0, INT, NULL),
    C(ZREVRANGE, "zrevrange", -4, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZREVRANGEBYLEX, "zrevrangebylex", -4, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZREVRANGEBYSCORE, "zrevrangebyscore", -4, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZREVRANK, "zrevrank", 3, KEY, RO|NC, 1, 1, 1, 0, ANY, NULL),
    C(ZSCAN, "zscan", -3, KEY, RO|NC, 1, 1, 1, 0, ARR, NULL),
    C(ZSCORE, "zscore", 3, KEY, RO|NC, 1, 1, 1, 0, BLK, NULL),
    C(ZUNION, "zunion", -3, KEY, RO|MV|NC, 0, 0, 0, 1, ARR, NULL),
    C(ZUNIONSTORE, "zunionstore", -4, KEY, W|MV|NC, 1, 1, 1, 2, INT, NULL),
};
/* clang-format on */

#undef C
#undef W
#undef RO
#undef MV
#undef NC
#undef INT
#undef ST
#undef BLK
#undef ARR
#undef ANY

_Static_assert(WN_RCMD_STAT_UNKNOWN < 256, "command ids and the unknown's must fit the per-command "
                                           "counters");

/* The longest command name ("georadiusbymember_ro"). */
#define NAME_MAX_LEN 20

/*
 * The lookup runs once per request: an open-addressing hash index over the
 * table (slot: id + 1, 0 empty) instead of a binary search with a string
 * compare per step. It is built before main (a constructor: no thread exists
 * yet) and only read after.
 */
#define INDEX_SLOTS 1024u
_Static_assert(WN_RCMD_COUNT * 2 < INDEX_SLOTS, "the index stays under half full");

static uint8_t index_slots[INDEX_SLOTS];

static uint32_t name_hash(const char *lower, size_t len)
{
    uint32_t h = 5381;
    for (size_t i = 0; i < len; i++)
        h = h * 33u + (unsigned char)lower[i];
    return h ^ (h >> 11);
}

__attribute__((constructor)) static void index_build(void)
{
    for (uint16_t id = 0; id < WN_RCMD_COUNT; id++) {
        uint32_t slot = name_hash(table[id].name, table[id].name_len);
        while (index_slots[slot % INDEX_SLOTS] != 0)
            slot++;
        index_slots[slot % INDEX_SLOTS] = (uint8_t)(id + 1);
    }
}

const wn_rcmd_t *wn_rcmd_lookup(const char *name, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN)
        return NULL;
    char lower[NAME_MAX_LEN];
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        lower[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    for (uint32_t slot = name_hash(lower, len);; slot++) {
        uint8_t v = index_slots[slot % INDEX_SLOTS];
        if (v == 0)
            return NULL;
        const wn_rcmd_t *e = &table[v - 1];
        if (e->name_len == len && memcmp(e->name, lower, len) == 0)
            return e;
    }
}

const wn_rcmd_t *wn_rcmd_by_id(uint16_t id)
{
    return id < WN_RCMD_COUNT ? &table[id] : NULL;
}

uint16_t wn_rcmd_count(void)
{
    return WN_RCMD_COUNT;
}

static const char *const class_names[] = {
    "key",   "multi_key", "multi_kv",     "script",      "all_keys_one_server",
    "local", "keyless",   "every_server", "unsupported",
};
_Static_assert(WN_ARRAY_SIZE(class_names) == WN_RCMD_CLASS_COUNT, "one name per class");

const char *wn_rcmd_class_name(wn_rcmd_class_t cls)
{
    return (unsigned)cls < WN_RCMD_CLASS_COUNT ? class_names[cls] : NULL;
}

bool wn_rcmd_arity_ok(const wn_rcmd_t *cmd, uint32_t argc)
{
    return cmd->arity >= 0 ? argc == (uint32_t)cmd->arity : argc >= (uint32_t)-cmd->arity;
}

bool wn_rcmd_argc_ok(const wn_rcmd_t *cmd, uint32_t argc)
{
    if (!wn_rcmd_arity_ok(cmd, argc))
        return false;
    /* MSET, MSETNX: key/value pairs to the end */
    if (cmd->key_step == 2 && cmd->last_key == -1)
        return (argc - (uint32_t)cmd->first_key) % 2 == 0;
    return true;
}

bool wn_rcmd_key_range(const wn_rcmd_t *cmd, uint32_t argc, uint32_t *first, uint32_t *last,
                       uint32_t *step)
{
    if (cmd->first_key <= 0 || cmd->key_step <= 0 || (uint32_t)cmd->first_key >= argc)
        return false;
    int64_t l = cmd->last_key >= 0 ? cmd->last_key : (int64_t)argc + cmd->last_key;
    if (l < cmd->first_key)
        return false;
    if (l >= (int64_t)argc)
        l = (int64_t)argc - 1;
    *first = (uint32_t)cmd->first_key;
    *step = (uint32_t)cmd->key_step;
    /* the last key actually reached from first by whole steps */
    *last = *first + ((uint32_t)l - *first) / *step * *step;
    return true;
}

char wn_rcmd_reply_type(const wn_rcmd_t *cmd, uint32_t argc)
{
    switch ((wn_rcmd_id_t)cmd->id) {
    case WN_RCMD_ID_SET:
        /* GET makes it a bulk, NX and XX a null one; SET key value is +OK */
        return argc == 3 ? '+' : 0;
    case WN_RCMD_ID_LPOP:
    case WN_RCMD_ID_RPOP:
    case WN_RCMD_ID_SPOP:
    case WN_RCMD_ID_SRANDMEMBER:
    case WN_RCMD_ID_HRANDFIELD:
    case WN_RCMD_ID_ZRANDMEMBER:
        /* a count makes it an array; without one it is a bulk or a null */
        return argc == 2 ? '$' : 0;
    default:
        return cmd->reply;
    }
}

uint32_t wn_rcmd_route_arg(const wn_rcmd_t *cmd)
{
    if (cmd->first_key > 0)
        return (uint32_t)cmd->first_key;
    return cmd->numkeys_at > 0 ? (uint32_t)cmd->numkeys_at + 1 : 0;
}

int wn_resp_compose_unsupported(char *dst, size_t cap, const wn_rcmd_t *cmd)
{
    if (cmd->cls != WN_RCMD_UNSUPPORTED || cmd->unsupported_reason == NULL)
        return WN_EINVAL;
    static const char head[] = "-ERR unsupported command '";
    size_t nlen = strlen(cmd->name), rlen = strlen(cmd->unsupported_reason);
    size_t size = sizeof(head) - 1 + nlen + 3 + rlen + 2;
    if (size > cap)
        return WN_ETOOBIG;
    char *d = dst;
    memcpy(d, head, sizeof(head) - 1);
    d += sizeof(head) - 1;
    memcpy(d, cmd->name, nlen);
    d += nlen;
    memcpy(d, "': ", 3);
    d += 3;
    memcpy(d, cmd->unsupported_reason, rlen);
    d += rlen;
    memcpy(d, "\r\n", 2);
    return (int)size;
}
