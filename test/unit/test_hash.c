/*
 * test_hash.c: wn_hash() and wn_md5() against twemproxy 0.5.0. Every line of
 * test/data/hash_vectors.tsv (measured on twemproxy itself) must match, from
 * exactly-sized heap copies at several alignments so ASan sees any over-read;
 * hand-written known answers and bit-by-bit CRCs keep the file honest.
 */
#include "walnut/route.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define VECTORS_PATH WN_TEST_DATA "/hash_vectors.tsv"
/* The file holds 93 keys per hash; fewer means it was truncated or lost. */
#define VECTORS_MIN_PER_HASH 90
#define KEY_MAX 1024

static uint32_t hash_str(wn_hash_t h, const char *s)
{
    return wn_hash(h, s, strlen(s));
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode `n` hex digits into out; returns the byte count or -1. */
static int hex_decode(const char *hex, size_t n, unsigned char *out, size_t cap)
{
    if (n % 2 != 0 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_nibble(hex[i]), lo = hex_nibble(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return (int)(n / 2);
}

/* Hash `key` from a heap block that ends exactly where the key ends, with the
 * key starting `off` bytes into it: any read past the key is an ASan error. */
static uint32_t hash_exact(wn_hash_t h, const unsigned char *key, size_t len, size_t off)
{
    unsigned char *block = malloc(off + len + (len == 0 && off == 0));
    assert_non_null(block);
    memset(block, 0xa5, off);
    if (len > 0)
        memcpy(block + off, key, len);
    uint32_t v = wn_hash(h, (const char *)block + off, len);
    free(block);
    return v;
}

static void test_vectors_file(void **state)
{
    (void)state;
    FILE *f = fopen(VECTORS_PATH, "r");
    if (f == NULL)
        fail_msg("cannot open %s", VECTORS_PATH);

    unsigned count[WN_HASH_COUNT] = {0};
    unsigned lineno = 0, checked = 0, mismatches = 0;
    char line[4 * KEY_MAX];
    unsigned char key[KEY_MAX];

    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        size_t n = strcspn(line, "\r\n");
        if (line[n] == '\0' && !feof(f))
            fail_msg("%s:%u: line too long", VECTORS_PATH, lineno);
        line[n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;

        char *tab1 = strchr(line, '\t');
        char *tab2 = tab1 != NULL ? strchr(tab1 + 1, '\t') : NULL;
        if (tab2 == NULL)
            fail_msg("%s:%u: want name<TAB>key_hex<TAB>value", VECTORS_PATH, lineno);

        wn_hash_t h;
        if (wn_hash_parse(line, (size_t)(tab1 - line), &h) != 0)
            fail_msg("%s:%u: unknown hash '%.*s'", VECTORS_PATH, lineno, (int)(tab1 - line), line);
        int len = hex_decode(tab1 + 1, (size_t)(tab2 - tab1 - 1), key, sizeof key);
        if (len < 0)
            fail_msg("%s:%u: bad key hex", VECTORS_PATH, lineno);
        char *end;
        unsigned long long want = strtoull(tab2 + 1, &end, 10);
        if (end == tab2 + 1 || *end != '\0' || want > UINT32_MAX)
            fail_msg("%s:%u: bad value '%s'", VECTORS_PATH, lineno, tab2 + 1);
        *tab2 = '\0'; /* tab1 + 1 is now the key's hex alone, for messages */

        for (size_t off = 0; off < 4; off++) {
            uint32_t got = hash_exact(h, key, (size_t)len, off);
            if (got != (uint32_t)want) {
                print_error("%s:%u: %s(%s) at offset %zu = %u, want %llu\n", VECTORS_PATH, lineno,
                            wn_hash_name(h), tab1 + 1, off, got, want);
                mismatches++;
            }
        }
        count[h]++;
        checked++;
    }
    fclose(f);

    assert_int_equal(mismatches, 0);
    for (int h = 0; h < WN_HASH_COUNT; h++) {
        if (count[h] < VECTORS_MIN_PER_HASH)
            fail_msg("%s: only %u vectors for %s, want >= %d", VECTORS_PATH, count[h],
                     wn_hash_name((wn_hash_t)h), VECTORS_MIN_PER_HASH);
    }
    assert_true(checked >= WN_HASH_COUNT * VECTORS_MIN_PER_HASH);
}

static void assert_md5(const char *data, const char *want_hex)
{
    unsigned char want[16], got[16];
    assert_int_equal(hex_decode(want_hex, 32, want, sizeof want), 16);
    wn_md5(data, strlen(data), got);
    assert_memory_equal(got, want, 16);
}

static void test_md5_digest(void **state)
{
    (void)state;
    assert_md5("", "d41d8cd98f00b204e9800998ecf8427e");
    assert_md5("a", "0cc175b9c0f1b6a831c399e269772661");
    assert_md5("abc", "900150983cd24fb0d6963f7d28e17f72");
    assert_md5("The quick brown fox jumps over the lazy dog", "9e107d9d372bb6826bd81d3542a419d6");
    /* 80 bytes: more than one MD5 block. */
    assert_md5("1234567890123456789012345678901234567890"
               "1234567890123456789012345678901234567890",
               "57edf4a22be3c955ac49da2e2107b67a");
}

/* "apple" for every hash: twemproxy's own test_all.c, which took the values
 * from libmemcached's tests/hash_results.h. */
static void test_apple(void **state)
{
    (void)state;
    assert_int_equal(hash_str(WN_HASH_ONE_AT_A_TIME, "apple"), 2297466611u);
    assert_int_equal(hash_str(WN_HASH_MD5, "apple"), 3195025439u);
    assert_int_equal(hash_str(WN_HASH_CRC16, "apple"), 3662830516u);
    assert_int_equal(hash_str(WN_HASH_CRC32, "apple"), 10542u);
    assert_int_equal(hash_str(WN_HASH_CRC32A, "apple"), 2838417488u);
    assert_int_equal(hash_str(WN_HASH_FNV1_32, "apple"), 67176023u);
    assert_int_equal(hash_str(WN_HASH_FNV1A_32, "apple"), 280767167u);
    assert_int_equal(hash_str(WN_HASH_FNV1_64, "apple"), 473199127u);
    assert_int_equal(hash_str(WN_HASH_FNV1A_64, "apple"), 1488911807u);
    assert_int_equal(hash_str(WN_HASH_HSIEH, "apple"), 3738850110u);
    assert_int_equal(hash_str(WN_HASH_JENKINS, "apple"), 1442444624u);
    assert_int_equal(hash_str(WN_HASH_MURMUR, "apple"), 4142305122u);
}

/* Published answers for the standard algorithms, where twemproxy's variant
 * coincides with the standard one on ASCII. */
static void test_known_answers(void **state)
{
    (void)state;
    assert_int_equal(hash_str(WN_HASH_FNV1A_32, "a"), 0xe40c292cu);
    assert_int_equal(hash_str(WN_HASH_FNV1_32, "a"), 0x050c5d7eu);
    assert_int_equal(hash_str(WN_HASH_FNV1A_32, ""), 0x811c9dc5u);
    /* Low half of FNV-1 64 of "a", 0xaf63bd4c8601b7be. */
    assert_int_equal(hash_str(WN_HASH_FNV1_64, "a"), 0x8601b7beu);
    assert_int_equal(hash_str(WN_HASH_ONE_AT_A_TIME, "a"), 0xca2e9442u);
    assert_int_equal(hash_str(WN_HASH_ONE_AT_A_TIME, "The quick brown fox jumps over the lazy dog"),
                     0x519e91f5u);
    assert_int_equal(hash_str(WN_HASH_CRC32A, "123456789"), 0xcbf43926u);
    /* md5: first four digest bytes little-endian, d4 1d 8c d9. */
    assert_int_equal(hash_str(WN_HASH_MD5, ""), 0xd98c1dd4u);
}

/* The twemproxy quirks, each stated once by hand. */
static void test_quirks(void **state)
{
    (void)state;
    /* crc32 is bits 16..30 of CRC-32 ("123456789": 0xcbf43926). */
    assert_int_equal(hash_str(WN_HASH_CRC32, "123456789"), 0x4bf4u);
    /* crc16's register is never masked: the low 16 bits are CRC-16/XMODEM
     * (0x31c3), the rest is left over from the shifts. */
    uint32_t c16 = hash_str(WN_HASH_CRC16, "123456789");
    assert_int_equal(c16 & 0xffffu, 0x31c3u);
    assert_true(c16 > 0xffffu);
    /* Bytes >= 0x80 are sign-extended: fnv1a_32("\x80") is
     * (0x811c9dc5 ^ 0xffffff80) * 0x01000193, not (... ^ 0x80) * ... = 0x850b939f. */
    assert_int_equal(hash_str(WN_HASH_FNV1A_32, "\x80"), 0x04f3b29fu);
    /* fnv1a_64 is 32-bit arithmetic with the 64-bit constants truncated:
     * (0x84222325 ^ 'a') * 0x1b3 mod 2^32. */
    assert_int_equal(hash_str(WN_HASH_FNV1A_64, "a"), (uint32_t)(0x84222344u * 0x1b3u));
    /* Empty keys: hsieh and murmur give 0, jenkins its unmixed initial state
     * 0xdeadbeef + 0 + 13, crc32 ~0xffffffff. */
    assert_int_equal(hash_str(WN_HASH_HSIEH, ""), 0u);
    assert_int_equal(hash_str(WN_HASH_MURMUR, ""), 0u);
    assert_int_equal(hash_str(WN_HASH_JENKINS, ""), 0xdeadbefcu);
    assert_int_equal(hash_str(WN_HASH_CRC32, ""), 0u);
    assert_int_equal(hash_str(WN_HASH_ONE_AT_A_TIME, ""), 0u);
    /* Out-of-range hash: 0, not undefined behaviour. */
    assert_int_equal(wn_hash(WN_HASH_COUNT, "a", 1), 0u);
    assert_int_equal(wn_hash((wn_hash_t)-1, "a", 1), 0u);
}

static uint32_t crc16_bitwise(const unsigned char *p, size_t n)
{
    uint32_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint32_t)p[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}

static uint32_t crc32_bitwise(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc & 1) ? (crc >> 1) ^ 0xedb88320u : crc >> 1;
    }
    return ~crc;
}

/* Every table entry, via single-byte keys, and a key using all 256 bytes. */
static void test_crc_tables(void **state)
{
    (void)state;
    unsigned char all[256];
    for (int i = 0; i < 256; i++) {
        unsigned char b = (unsigned char)i;
        all[i] = (unsigned char)(255 - i);
        assert_int_equal(wn_hash(WN_HASH_CRC16, (const char *)&b, 1), crc16_bitwise(&b, 1));
        assert_int_equal(wn_hash(WN_HASH_CRC32A, (const char *)&b, 1), crc32_bitwise(&b, 1));
        assert_int_equal(wn_hash(WN_HASH_CRC32, (const char *)&b, 1),
                         (crc32_bitwise(&b, 1) >> 16) & 0x7fff);
    }
    assert_int_equal(wn_hash(WN_HASH_CRC16, (const char *)all, sizeof all) & 0xffff,
                     crc16_bitwise(all, sizeof all));
    assert_int_equal(wn_hash(WN_HASH_CRC32A, (const char *)all, sizeof all),
                     crc32_bitwise(all, sizeof all));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_file), cmocka_unit_test(test_md5_digest),
        cmocka_unit_test(test_apple),        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_quirks),       cmocka_unit_test(test_crc_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
