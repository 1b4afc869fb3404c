/*
 * proto/mcbin_response.c: framing of binary response packets from a
 * server, the quiet-opcode rule (which replies a quiet request must not
 * see, measured on memcached 1.6.18), and the packets the proxy composes
 * itself. Pure: no I/O, no allocation, no logging; any thread.
 */
#include "walnut/proto_mcbin.h"

#include "walnut/core.h"

#include <string.h>

typedef struct status_text {
    uint16_t code;
    const char *text;
} status_text_t;

static const status_text_t status_texts[] = {
#define WN_MCBIN_STATUS_TEXT(name, code, text) {code, text},
    WN_MCBIN_STATUS_MAP(WN_MCBIN_STATUS_TEXT)
#undef WN_MCBIN_STATUS_TEXT
};

const char *wn_mcbin_status_text(uint16_t status, size_t *len)
{
    const char *t = "";
    for (size_t i = 0; i < WN_ARRAY_SIZE(status_texts); i++) {
        if (status_texts[i].code == status)
            t = status_texts[i].text;
    }
    if (len != NULL)
        *len = strlen(t);
    return t;
}

int wn_mcbin_response_parse(const wn_mcbin_limits_t *lim, uint8_t req_op, uint32_t opaque,
                            const uint8_t *buf, size_t n, wn_mcbin_response_t *rsp)
{
    uint32_t max_value = lim != NULL ? lim->max_value : WN_MCBIN_VALUE_MAX;
    if (n < WN_MCBIN_HEADER_LEN)
        return WN_EAGAIN;
    wn_mcbin_response_t r;
    memset(&r, 0, sizeof(r));
    wn_mcbin_header_decode(buf, &r.h);
    uint32_t head = (uint32_t)r.h.extlen + r.h.keylen;
    if (r.h.magic != WN_MCBIN_RES_MAGIC || r.h.datatype != 0 || head > r.h.bodylen ||
        r.h.keylen > WN_MCBIN_KEY_MAX || r.h.opcode != req_op || r.h.opaque != opaque)
        return WN_EPROTO;
    r.head_len = WN_MCBIN_HEADER_LEN + head;
    r.value_len = r.h.bodylen - head;
    if (r.value_len > max_value)
        return WN_ETOOBIG;
    if (n < r.head_len)
        return WN_EAGAIN;
    /* STAT streams one packet per entry and ends with an empty one. */
    r.done = req_op != WN_MCBIN_OP_STAT || r.h.vbucket_status != WN_MCBIN_OK ||
             (r.h.keylen == 0 && r.h.bodylen == 0);
    *rsp = r;
    return (int)r.head_len;
}

bool wn_mcbin_quiet_drops(uint8_t op, uint16_t status)
{
    if (!wn_mcbin_op_is_quiet(op))
        return false;
    switch (wn_mcbin_opcode_loud(op)) {
    case WN_MCBIN_OP_GET:
    case WN_MCBIN_OP_GETK:
    case WN_MCBIN_OP_GAT:
    case WN_MCBIN_OP_GATK:
        return status == WN_MCBIN_KEY_ENOENT;
    case WN_MCBIN_OP_QUIT:
        return true;
    default:
        return status == WN_MCBIN_OK;
    }
}

int wn_mcbin_compose_header(uint8_t *dst, size_t cap, uint8_t op, uint16_t status,
                            uint8_t extlen, uint16_t keylen, uint32_t value_len,
                            uint32_t opaque, uint64_t cas)
{
    if (cap < WN_MCBIN_HEADER_LEN)
        return WN_ETOOBIG;
    if ((uint64_t)value_len + extlen + keylen > UINT32_MAX)
        return WN_EINVAL;
    wn_mcbin_header_t h = {
        .magic = WN_MCBIN_RES_MAGIC,
        .opcode = op,
        .keylen = keylen,
        .extlen = extlen,
        .datatype = 0,
        .vbucket_status = status,
        .bodylen = value_len + extlen + keylen,
        .opaque = opaque,
        .cas = cas,
    };
    wn_mcbin_header_encode(dst, &h);
    return WN_MCBIN_HEADER_LEN;
}

int wn_mcbin_compose_error(uint8_t *dst, size_t cap, uint8_t op, uint32_t opaque,
                           uint16_t status)
{
    if (status == WN_MCBIN_NONE)
        return WN_EINVAL;
    size_t len;
    const char *text = wn_mcbin_status_text(status, &len);
    if (cap < WN_MCBIN_HEADER_LEN + len)
        return WN_ETOOBIG;
    wn_mcbin_compose_header(dst, cap, op, status, 0, 0, (uint32_t)len, opaque, 0);
    memcpy(dst + WN_MCBIN_HEADER_LEN, text, len);
    return (int)(WN_MCBIN_HEADER_LEN + len);
}
