/*
 * flaky_dns.c: an LD_PRELOAD shim for the tests that need DNS to misbehave
 * (test_reload_hostile.py, test_cli.py). The host name "flaky.walnut.test"
 * resolves to 127.0.0.1, or to 127.0.0.2 while the file named by
 * WALNUT_TEST_DNS_MOVED exists (the name moved), and fails (EAI_NONAME)
 * while the file named by WALNUT_TEST_DNS_DOWN exists: a DNS outage the test
 * switches on and off. With WALNUT_TEST_DNS_LOG set, each lookup of that name
 * appends a line to that file: "main" when the process's main thread (walnut's
 * control thread) asked, "other" when another thread did. Every other name
 * goes to the real getaddrinfo.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static bool flag_set(const char *var)
{
    const char *path = getenv(var);
    return path != NULL && access(path, F_OK) == 0;
}

static void log_lookup(void)
{
    const char *path = getenv("WALNUT_TEST_DNS_LOG");
    if (path == NULL)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    const char *who = gettid() == getpid() ? "main\n" : "other\n";
    ssize_t n = write(fd, who, strlen(who));
    (void)n;
    close(fd);
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static gai_fn real;
    if (real == NULL)
        real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    if (node != NULL && strcmp(node, "flaky.walnut.test") == 0) {
        log_lookup();
        if (flag_set("WALNUT_TEST_DNS_DOWN"))
            return EAI_NONAME;
        node = flag_set("WALNUT_TEST_DNS_MOVED") ? "127.0.0.2" : "127.0.0.1";
    }
    return real(node, service, hints, res);
}
