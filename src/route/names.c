/*
 * route/names.c: the configuration names of hashes and distributions, in
 * twemproxy's spelling. Any thread; constant tables only.
 */
#include "walnut/route.h"

#include <string.h>

#include "walnut/core.h"

static const char *const hash_names[] = {
#define WN_HASH_STR(up, low) #low,
    WN_HASH_MAP(WN_HASH_STR)
#undef WN_HASH_STR
};

static const char *const dist_names[] = {
#define WN_DIST_STR(up, low) #low,
    WN_DIST_MAP(WN_DIST_STR)
#undef WN_DIST_STR
};

static int lookup(const char *const *names, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return i;
    }
    return -1;
}

const char *wn_hash_name(wn_hash_t h)
{
    return (unsigned)h < WN_HASH_COUNT ? hash_names[h] : NULL;
}

int wn_hash_parse(const char *name, size_t len, wn_hash_t *out)
{
    int i = lookup(hash_names, WN_HASH_COUNT, name, len);
    if (i < 0)
        return WN_EINVAL;
    *out = (wn_hash_t)i;
    return 0;
}

const char *wn_hash_names(void)
{
    return "one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, "
           "hsieh, murmur, jenkins";
}

const char *wn_dist_name(wn_dist_t d)
{
    return (unsigned)d < WN_DIST_COUNT ? dist_names[d] : NULL;
}

int wn_dist_parse(const char *name, size_t len, wn_dist_t *out)
{
    int i = lookup(dist_names, WN_DIST_COUNT, name, len);
    if (i < 0)
        return WN_EINVAL;
    *out = (wn_dist_t)i;
    return 0;
}

const char *wn_dist_names(void)
{
    return "ketama, modula, random";
}
