/*
 * fuzz_mcbin_request.c: libFuzzer target for the binary request parser.
 * The first byte picks the value limit; the rest is a client byte stream,
 * played packet by packet as the worker plays it (forward the head and
 * value_len bytes; skip a rejected packet; stop at a close). Checks: nothing
 * outside the input is read (ASan), every prefix of a packet short of its
 * decision asks for more, results are self-consistent, the error packet
 * composes and decodes back, and the loud rewrite keeps all but the opcode.
 */
#include "walnut/proto_mcbin.h"

#include "walnut/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static void check_prefixes(const wn_mcbin_limits_t *lim, const uint8_t *p, size_t decided)
{
    for (size_t n = 0; n < decided; n++) {
        uint8_t *b = malloc(n ? n : 1);
        CHECK(b != NULL);
        memcpy(b, p, n);
        wn_mcbin_request_t r;
        CHECK(wn_mcbin_request_parse(lim, b, n, &r) == WN_EAGAIN);
        free(b);
    }
}

static void check_forwarded(const uint8_t *p, const wn_mcbin_request_t *r)
{
    const wn_mcbin_header_t *h = &r->h;
    CHECK(h->magic == WN_MCBIN_REQ_MAGIC && h->datatype == 0 && wn_mcbin_op_known(h->opcode));
    CHECK(h->keylen <= WN_MCBIN_KEY_MAX && h->extlen <= 20);
    CHECK(r->head_len == WN_MCBIN_HEADER_LEN + h->extlen + h->keylen);
    CHECK(r->key_off == WN_MCBIN_HEADER_LEN + h->extlen);
    CHECK((uint64_t)r->head_len - WN_MCBIN_HEADER_LEN + r->value_len == h->bodylen);
    if (!wn_mcbin_op_stores(h->opcode) && h->opcode != WN_MCBIN_OP_SASL_AUTH)
        CHECK(r->value_len == 0);
    uint8_t loud[WN_MCBIN_HEADER_LEN];
    memcpy(loud, p, sizeof loud);
    wn_mcbin_header_set_opcode(loud, wn_mcbin_opcode_loud(h->opcode));
    CHECK(!wn_mcbin_op_is_quiet(loud[1]));
    CHECK(memcmp(loud + 2, p + 2, sizeof loud - 2) == 0);
}

static void check_rejected(int rc, const wn_mcbin_request_t *r)
{
    CHECK(rc == WN_EPROTO || rc == WN_ETOOBIG);
    CHECK((rc == WN_ETOOBIG) == (r->status == WN_MCBIN_E2BIG));
    if (r->after == WN_MCBIN_AFTER_SKIP)
        CHECK(r->skip_len == WN_MCBIN_HEADER_LEN + (uint64_t)r->h.bodylen);
    if (r->status == WN_MCBIN_NONE) {
        CHECK(r->after == WN_MCBIN_AFTER_CLOSE && r->h.magic != WN_MCBIN_REQ_MAGIC);
        return;
    }
    uint8_t out[WN_MCBIN_ERROR_MAX];
    int n = wn_mcbin_compose_error(out, sizeof out, r->h.opcode, r->h.opaque, r->status);
    CHECK(n >= WN_MCBIN_HEADER_LEN);
    wn_mcbin_response_t back;
    CHECK(wn_mcbin_response_parse(NULL, r->h.opcode, r->h.opaque, out, (size_t)n, &back) ==
          WN_MCBIN_HEADER_LEN);
    CHECK(back.h.vbucket_status == r->status && back.value_len == (uint32_t)n - 24);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    wn_mcbin_limits_t lim = {(data[0] & 1) ? 16 : WN_MCBIN_VALUE_MAX};
    const uint8_t *in = data + 1;
    size_t n = size - 1, pos = 0;
    while (pos < n) {
        wn_mcbin_request_t r;
        int rc = wn_mcbin_request_parse(&lim, in + pos, n - pos, &r);
        if (rc == WN_EAGAIN)
            break;
        check_prefixes(&lim, in + pos, rc > 0 ? (size_t)rc : WN_MCBIN_HEADER_LEN);
        if (rc > 0) {
            CHECK((uint32_t)rc == r.head_len && r.head_len <= n - pos);
            check_forwarded(in + pos, &r);
            if (n - pos - r.head_len < r.value_len)
                break;
            pos += r.head_len + r.value_len;
            continue;
        }
        check_rejected(rc, &r);
        if (r.after == WN_MCBIN_AFTER_CLOSE || n - pos < r.skip_len)
            break;
        pos += (size_t)r.skip_len;
    }
    return 0;
}
