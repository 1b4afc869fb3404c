/*
 * fuzz_mcbin_response.c: libFuzzer target for the binary response parser.
 * The first byte is the request's opcode, or 0xff to frame each packet as
 * an answer to its own opcode and opaque (a captured server stream). The
 * rest is what a server sent. Checks: nothing outside the input is read
 * (ASan), every prefix short of the head asks for more, results are
 * self-consistent, and the quiet rule only ever drops what can answer.
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

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool follow = data[0] == 0xff;
    const uint8_t *in = data + 1;
    size_t n = size - 1, pos = 0;
    wn_mcbin_limits_t lim = {4096};
    while (n - pos >= WN_MCBIN_HEADER_LEN) {
        const uint8_t *p = in + pos;
        uint8_t op = follow ? p[1] : data[0];
        uint32_t opaque = rd32(p + 12);
        wn_mcbin_response_t r;
        int rc = wn_mcbin_response_parse(&lim, op, opaque, p, n - pos, &r);
        if (rc == WN_EAGAIN)
            break;
        if (rc < 0) {
            CHECK(rc == WN_EPROTO || rc == WN_ETOOBIG);
            break;
        }
        for (size_t k = 0; k < (size_t)rc; k++) {
            uint8_t *b = malloc(k ? k : 1);
            CHECK(b != NULL);
            memcpy(b, p, k);
            wn_mcbin_response_t again;
            int rc2 = wn_mcbin_response_parse(&lim, op, opaque, b, k, &again);
            CHECK(rc2 == WN_EAGAIN);
            free(b);
        }
        CHECK(r.h.magic == WN_MCBIN_RES_MAGIC && r.h.opcode == op && r.h.opaque == opaque);
        CHECK(r.head_len == (uint32_t)rc && r.value_len <= lim.max_value);
        CHECK((uint64_t)r.head_len - WN_MCBIN_HEADER_LEN + r.value_len == r.h.bodylen);
        if (op != WN_MCBIN_OP_STAT)
            CHECK(r.done);
        for (unsigned q = 0; q < 256; q++) {
            if (wn_mcbin_quiet_drops((uint8_t)q, r.h.vbucket_status))
                CHECK(wn_mcbin_op_is_quiet((uint8_t)q));
        }
        if (n - pos - r.head_len < r.value_len)
            break;
        pos += r.head_len + r.value_len;
    }
    return 0;
}
