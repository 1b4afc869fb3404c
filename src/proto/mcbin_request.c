/*
 * proto/mcbin_request.c: the binary protocol's opcode table and the framing
 * and checking of client request packets, deciding what memcached 1.6.18
 * would answer a bad one and whether it would then close. Pure: no I/O, no
 * allocation, no logging; called on the worker thread that owns the client.
 */
#include "walnut/proto_mcbin.h"

#include "walnut/core.h"

#include <string.h>

typedef struct op_info {
    const char *name; /* NULL: unknown to memcached 1.6.18 */
    uint8_t loud;
    int8_t ext; /* exact extras length; -1: 0 or 4 */
    int8_t key; /* 1 required, 0 forbidden, -1 optional */
    int8_t val; /* 1 allowed, 0 forbidden */
} op_info_t;

static const op_info_t ops[256] = {
#define WN_MCBIN_OP_INFO(n, code, l, e, k, v) [code] = {#n, WN_MCBIN_OP_##l, e, k, v},
    WN_MCBIN_OP_MAP(WN_MCBIN_OP_INFO)
#undef WN_MCBIN_OP_INFO
};

const char *wn_mcbin_op_name(uint8_t op)
{
    return ops[op].name;
}

bool wn_mcbin_op_known(uint8_t op)
{
    return ops[op].name != NULL;
}

bool wn_mcbin_op_is_quiet(uint8_t op)
{
    return ops[op].name != NULL && ops[op].loud != op;
}

uint8_t wn_mcbin_opcode_loud(uint8_t op)
{
    return ops[op].name != NULL ? ops[op].loud : op;
}

bool wn_mcbin_op_stores(uint8_t op)
{
    switch (wn_mcbin_opcode_loud(op)) {
    case WN_MCBIN_OP_SET:
    case WN_MCBIN_OP_ADD:
    case WN_MCBIN_OP_REPLACE:
    case WN_MCBIN_OP_APPEND:
    case WN_MCBIN_OP_PREPEND:
        return true;
    default:
        return false;
    }
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, (uint16_t)(v >> 16));
    wr16(p + 2, (uint16_t)v);
}

void wn_mcbin_header_decode(const uint8_t *p, wn_mcbin_header_t *h)
{
    h->magic = p[0];
    h->opcode = p[1];
    h->keylen = rd16(p + 2);
    h->extlen = p[4];
    h->datatype = p[5];
    h->vbucket_status = rd16(p + 6);
    h->bodylen = rd32(p + 8);
    h->opaque = rd32(p + 12);
    h->cas = (uint64_t)rd32(p + 16) << 32 | rd32(p + 20);
}

void wn_mcbin_header_encode(uint8_t *p, const wn_mcbin_header_t *h)
{
    p[0] = h->magic;
    p[1] = h->opcode;
    wr16(p + 2, h->keylen);
    p[4] = h->extlen;
    p[5] = h->datatype;
    wr16(p + 6, h->vbucket_status);
    wr32(p + 8, h->bodylen);
    wr32(p + 12, h->opaque);
    wr32(p + 16, (uint32_t)(h->cas >> 32));
    wr32(p + 20, (uint32_t)h->cas);
}

/* Does a known opcode's packet have the shape memcached wants? */
static bool shape_ok(const op_info_t *op, const wn_mcbin_header_t *h)
{
    bool ext = op->ext >= 0 ? h->extlen == op->ext : (h->extlen == 0 || h->extlen == 4);
    bool key = op->key < 0 || (op->key == 1 ? h->keylen > 0 : h->keylen == 0);
    uint32_t head = (uint32_t)h->extlen + h->keylen;
    bool val = op->val == 1 || h->bodylen == head;
    return ext && key && val;
}

static int reject(wn_mcbin_request_t *r, wn_mcbin_status_t status, wn_mcbin_after_t after)
{
    r->status = status;
    r->after = after;
    r->skip_len = after == WN_MCBIN_AFTER_SKIP ? WN_MCBIN_HEADER_LEN + (uint64_t)r->h.bodylen : 0;
    return status == WN_MCBIN_E2BIG ? WN_ETOOBIG : WN_EPROTO;
}

/* Every check that needs only the header, in memcached's order. */
static int check_header(const wn_mcbin_limits_t *lim, wn_mcbin_request_t *r)
{
    const wn_mcbin_header_t *h = &r->h;
    if (h->magic != WN_MCBIN_REQ_MAGIC)
        return reject(r, WN_MCBIN_NONE, WN_MCBIN_AFTER_CLOSE);
    if ((uint32_t)h->keylen + h->extlen > h->bodylen)
        return reject(r, WN_MCBIN_UNKNOWN_COMMAND, WN_MCBIN_AFTER_CLOSE);
    if (h->keylen > WN_MCBIN_KEY_MAX || h->datatype != 0)
        return reject(r, WN_MCBIN_EINVAL, WN_MCBIN_AFTER_CLOSE);
    const op_info_t *op = &ops[h->opcode];
    if (op->name == NULL)
        return reject(r, WN_MCBIN_UNKNOWN_COMMAND, WN_MCBIN_AFTER_SKIP);
    if (!shape_ok(op, h))
        return reject(r, WN_MCBIN_EINVAL, WN_MCBIN_AFTER_CLOSE);
    switch (h->opcode) {
    case WN_MCBIN_OP_SASL_LIST_MECHS:
    case WN_MCBIN_OP_SASL_AUTH:
    case WN_MCBIN_OP_SASL_STEP:
        return reject(r, WN_MCBIN_UNKNOWN_COMMAND, WN_MCBIN_AFTER_SKIP);
    default:
        break;
    }
    if (wn_mcbin_op_stores(h->opcode) && r->value_len > lim->max_value)
        return reject(r, WN_MCBIN_E2BIG, WN_MCBIN_AFTER_SKIP);
    return 0;
}

int wn_mcbin_request_parse(const wn_mcbin_limits_t *lim, const uint8_t *buf, size_t n,
                           wn_mcbin_request_t *req)
{
    wn_mcbin_limits_t l = {WN_MCBIN_VALUE_MAX};
    if (lim != NULL)
        l = *lim;
    if (n < WN_MCBIN_HEADER_LEN)
        return WN_EAGAIN;
    wn_mcbin_request_t r;
    memset(&r, 0, sizeof(r));
    wn_mcbin_header_decode(buf, &r.h);
    r.extras_off = WN_MCBIN_HEADER_LEN;
    r.key_off = WN_MCBIN_HEADER_LEN + r.h.extlen;
    r.head_len = r.key_off + r.h.keylen;
    if ((uint32_t)r.h.keylen + r.h.extlen <= r.h.bodylen)
        r.value_len = r.h.bodylen - r.h.keylen - r.h.extlen;
    r.status = WN_MCBIN_OK;
    int rc = check_header(&l, &r);
    if (rc != 0) {
        *req = r;
        return rc;
    }
    if (n < r.head_len)
        return WN_EAGAIN;
    *req = r;
    return (int)r.head_len;
}
