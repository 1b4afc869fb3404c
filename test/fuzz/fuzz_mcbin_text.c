/*
 * fuzz_mcbin_text.c: libFuzzer target for the binary <-> text translation.
 * The first byte picks what the rest is (mod 4): 0 a client packet (framed
 * by wn_mcbin_request_parse, then turned into a text line), 1 an opcode byte
 * and a server's reply line, 2 a `stats` text, 3 a STAT group. Checks: nothing outside the
 * input is read (ASan); a composed line is one line (its only "\n" at the
 * end, no NUL: a key can never smuggle a command), fits the documented
 * maximum and is reproduced into an exact-size buffer; reply statuses are
 * ones memcached sends or walnut documents; the stats composer's measure
 * matches what it writes.
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

static void request(const uint8_t *in, size_t n)
{
    wn_mcbin_limits_t lim = {4096};
    wn_mcbin_request_t q;
    int rc = wn_mcbin_request_parse(&lim, in, n, &q);
    if (rc <= 0)
        return;
    char line[WN_MCBIN_TEXT_LINE_MAX];
    int len = wn_mcbin_text_request(line, sizeof(line), in, &q);
    if (len == WN_EINVAL)
        return;
    CHECK(len > 2 && len <= WN_MCBIN_TEXT_LINE_MAX);
    CHECK(line[len - 2] == '\r' && line[len - 1] == '\n');
    CHECK(memchr(line, '\n', (size_t)len - 1) == NULL);
    CHECK(memchr(line, '\0', (size_t)len) == NULL);
    char *exact = malloc((size_t)len);
    CHECK(exact != NULL);
    CHECK(wn_mcbin_text_request(exact, (size_t)len, in, &q) == len);
    CHECK(memcmp(exact, line, (size_t)len) == 0);
    CHECK(wn_mcbin_text_request(exact, (size_t)len - 1, in, &q) == WN_ETOOBIG);
    free(exact);
}

static void reply(const uint8_t *in, size_t n)
{
    if (n < 1)
        return;
    char *line = malloc(n - 1 + 1);
    CHECK(line != NULL);
    memcpy(line, in + 1, n - 1);
    wn_mcbin_text_reply_t rep;
    int rc = wn_mcbin_text_reply(in[0], line, n - 1, &rep);
    free(line);
    CHECK(rc == 0 || rc == WN_EPROTO);
    if (rc < 0)
        return;
    switch (rep.status) {
    case WN_MCBIN_OK:
        break;
    case WN_MCBIN_KEY_ENOENT:
    case WN_MCBIN_KEY_EEXISTS:
    case WN_MCBIN_E2BIG:
    case WN_MCBIN_NOT_STORED:
    case WN_MCBIN_DELTA_BADVAL:
    case WN_MCBIN_ENOMEM:
    case WN_MCBIN_EINTERNAL:
        CHECK(!rep.has_flags && rep.cas == 0);
        break;
    default:
        CHECK(false);
    }
}

static void stats(const uint8_t *in, size_t n)
{
    int len = wn_mcbin_stats_compose(NULL, 0, 1, (const char *)in, n);
    if (len < 0)
        return;
    CHECK(len >= WN_MCBIN_HEADER_LEN);
    uint8_t *out = malloc((size_t)len);
    CHECK(out != NULL);
    CHECK(wn_mcbin_stats_compose(out, (size_t)len, 1, (const char *)in, n) == len);
    CHECK(wn_mcbin_stats_compose(out, (size_t)len - 1, 1, (const char *)in, n) == WN_ETOOBIG);
    /* every packet is a well-formed STAT response; the last one is empty */
    size_t pos = 0;
    wn_mcbin_header_t h;
    for (;;) {
        CHECK((size_t)len - pos >= WN_MCBIN_HEADER_LEN);
        wn_mcbin_header_decode(out + pos, &h);
        CHECK(h.magic == WN_MCBIN_RES_MAGIC && h.opcode == WN_MCBIN_OP_STAT && h.opaque == 1);
        pos += WN_MCBIN_HEADER_LEN + h.bodylen;
        CHECK(pos <= (size_t)len);
        if (h.bodylen == 0)
            break;
        CHECK(h.keylen > 0 && h.keylen <= h.bodylen);
    }
    CHECK(pos == (size_t)len);
    free(out);
}

static void stats_group(const uint8_t *in, size_t n)
{
    int len = wn_mcbin_stats_group(NULL, 0, 1, (const char *)in, n);
    CHECK(len >= 0);
    if (len == 0)
        return;
    uint8_t *out = malloc((size_t)len);
    CHECK(out != NULL);
    CHECK(wn_mcbin_stats_group(out, (size_t)len, 1, (const char *)in, n) == len);
    CHECK(wn_mcbin_stats_group(out, (size_t)len - 1, 1, (const char *)in, n) == WN_ETOOBIG);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* exact-size copy so ASan sees any over-read */
    uint8_t *in = malloc(size - 1 + 1);
    if (in == NULL)
        return 0;
    memcpy(in, data + 1, size - 1);
    switch (data[0] % 4) {
    case 0:
        request(in, size - 1);
        break;
    case 1:
        reply(in, size - 1);
        break;
    case 2:
        stats(in, size - 1);
        break;
    default:
        stats_group(in, size - 1);
        break;
    }
    free(in);
    return 0;
}
