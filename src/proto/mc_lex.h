/*
 * proto/mc_lex.h: the lexical pieces shared by the memcached request and
 * response parsers: finding a line end resumably, splitting on spaces, and
 * reading numbers the way memcached 1.6 does. Module-private; pure.
 */
#ifndef WALNUT_PROTO_MC_LEX_H
#define WALNUT_PROTO_MC_LEX_H

#include "walnut/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Normalise caller limits (NULL: defaults; max_line raised to the minimum). */
wn_mc_limits_t mc_limits(const wn_mc_limits_t *lim);

/*
 * Find the end of the line at buf (n bytes), searching on from *scanned.
 * Returns 0 with *line_len (through "\n") and *content_len (without "\n" and
 * one "\r" before it); WN_EAGAIN with *scanned advanced; or WN_ETOOBIG when
 * max_line bytes hold no "\n".
 */
int mc_line_find(uint32_t *scanned, const char *buf, size_t n, uint32_t max_line,
                 uint32_t *line_len, uint32_t *content_len);

/* The next space-separated token of buf[*pos, end): false when none. */
bool mc_token_next(const char *buf, uint32_t *pos, uint32_t end, wn_mc_span_t *tok);

bool mc_span_eq(const char *buf, wn_mc_span_t t, const char *s);

/*
 * memcached's safe_strtoul / safe_strtoull / safe_strtol over one token,
 * on LP64: leading white space and a sign are allowed, the digits must end
 * the token or be followed by white space (anything after that is ignored),
 * overflow of the 64-bit C type fails, and for the unsigned readers a value
 * that is negative as a signed 64-bit one fails when the token holds a '-'
 * anywhere (memcached's strchr: "9223372036854775808\t-" too); the 32-bit results
 * then wrap exactly as memcached's implicit conversions do.
 */
bool mc_read_u32(const char *s, size_t len, uint32_t *out);
bool mc_read_u64(const char *s, size_t len, uint64_t *out);
bool mc_read_i32(const char *s, size_t len, int32_t *out);

/* The same scan over a token that comes in pieces: feed each piece in turn
 * (a zeroed wn_mc_num_t to start), then read the result at the token's end
 * as mc_read_i32 would (false: memcached's error). */
void mc_num_feed(wn_mc_num_t *n, const char *s, size_t len);
bool mc_num_i32(const wn_mc_num_t *n, int32_t *out);

/* Strict: 1..20 ASCII digits fitting in 64 bits, nothing else (replies). */
bool mc_read_digits(const char *s, size_t len, uint64_t *out);

#endif
