/*
 * libFuzzer target for the configuration loader: any bytes as a
 * nutcracker.yml must give a snapshot or an error, never a crash or a leak.
 */
#include <stddef.h>
#include <stdint.h>

#include "walnut/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    wn_conf_t *conf = NULL;
    if (wn_conf_parse((const char *)data, size, "fuzz.yml", &conf, err, sizeof(err)) == 0) {
        wn_conf_ref(conf);
        wn_conf_unref(conf);
        wn_conf_unref(conf);
    }
    return 0;
}
