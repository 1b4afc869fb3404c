/*
 * flaky_dns.c: an LD_PRELOAD shim for test_reload_hostile.py. The host name
 * "flaky.walnut.test" resolves to 127.0.0.1 while the file named by
 * WALNUT_TEST_DNS_DOWN does not exist, and fails (EAI_NONAME) while it does:
 * a DNS outage the test switches on and off. Every other name goes to the
 * real getaddrinfo.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static gai_fn real;
    if (real == NULL)
        real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    if (node != NULL && strcmp(node, "flaky.walnut.test") == 0) {
        const char *flag = getenv("WALNUT_TEST_DNS_DOWN");
        if (flag != NULL && access(flag, F_OK) == 0)
            return EAI_NONAME;
        node = "127.0.0.1";
    }
    return real(node, service, hints, res);
}
