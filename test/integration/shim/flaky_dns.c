/*
 * flaky_dns.c: an LD_PRELOAD shim for the tests that need DNS to misbehave
 * (test_reload_hostile.py, test_cli.py). The host name "flaky.walnut.test"
 * resolves to 127.0.0.1, or to 127.0.0.2 while the file named by
 * WALNUT_TEST_DNS_MOVED exists (the name moved), to 127.0.0.2 and then
 * 127.0.0.1 while WALNUT_TEST_DNS_BOTH exists (a name with two addresses),
 * and fails (EAI_NONAME) while the file named by WALNUT_TEST_DNS_DOWN exists:
 * a DNS outage the test switches on and off; each lookup of it takes a
 * while when WALNUT_TEST_DNS_SLOW exists (slow_seconds()), and 30 s when another
 * thread than the main one asks while WALNUT_TEST_DNS_HANG exists. "down.walnut.test" never
 * resolves (logged with "down:" before the thread). With WALNUT_TEST_DNS_LOG set,
 * each lookup of that name appends a line to that file: "main" when the
 * process's main thread (walnut's control thread) asked, else the asking
 * thread's name (walnut names its workers "wn-worker-N", a reload's lookups
 * "reload-dns"). Every other name
 * goes to the real getaddrinfo.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
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

/* Appends one line to the file the environment variable `var` names, if set. */
static void append(const char *var, const char *line)
{
    const char *path = getenv(var);
    if (path == NULL)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t n = write(fd, line, strlen(line));
    (void)n;
    close(fd);
}

/* With WALNUT_TEST_DNS_PORTS set, the port asked with that name, a line per lookup. */
static void log_port(const char *service)
{
    char line[32];
    snprintf(line, sizeof(line), "%s\n", service != NULL ? service : "-");
    append("WALNUT_TEST_DNS_PORTS", line);
}

static void log_lookup(const char *prefix)
{
    char who[40];
    snprintf(who, sizeof(who), "%smain\n", prefix);
    if (gettid() != getpid()) {
        /* another thread: its name ("wn-worker-N" for a worker) */
        char name[16] = "?";
        pthread_getname_np(pthread_self(), name, sizeof(name));
        snprintf(who, sizeof(who), "%s%s\n", prefix, name);
    }
    append("WALNUT_TEST_DNS_LOG", who);
}

/* A reload's lookup, on a thread of its own ("reload-dns"): not one of
 * the lookups in the background that WALNUT_TEST_DNS_HANG hangs. */
static bool reload_thread(void)
{
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof(name));
    return strcmp(name, "reload-dns") == 0;
}

/* 127.0.0.2 then 127.0.0.1: two lookups chained (freeaddrinfo frees both) */
static int both(const char *service, const struct addrinfo *hints, struct addrinfo **res,
                gai_fn real)
{
    struct addrinfo *a = NULL, *b = NULL;
    int rc = real("127.0.0.2", service, hints, &a);
    if (rc != 0)
        return rc;
    rc = real("127.0.0.1", service, hints, &b);
    if (rc != 0) {
        freeaddrinfo(a);
        return rc;
    }
    struct addrinfo *last = a;
    while (last->ai_next != NULL)
        last = last->ai_next;
    last->ai_next = b;
    *res = a;
    return 0;
}

/* While the file named by WALNUT_TEST_DNS_SLOW exists, a lookup takes as
 * many seconds as it says (1 when it is empty): a slow or silent resolver.
 * Read before the lookup is logged: a lookup a test has counted never takes
 * a value the test wrote after counting it (it would hang where the test
 * waits for the next one). */
static unsigned slow_seconds(void)
{
    const char *path = getenv("WALNUT_TEST_DNS_SLOW");
    if (path == NULL)
        return 0;
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    int seconds = 1;
    if (fscanf(f, "%d", &seconds) != 1 || seconds < 0)
        seconds = 1;
    fclose(f);
    return (unsigned)seconds;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static gai_fn real;
    if (real == NULL)
        real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    if (node != NULL && strcmp(node, "down.walnut.test") == 0) {
        unsigned s = slow_seconds();
        log_lookup("down:");
        sleep(s);
        return EAI_NONAME; /* a name that never resolves */
    }
    if (node != NULL && strcmp(node, "flaky.walnut.test") == 0) {
        unsigned s = slow_seconds();
        log_lookup("");
        log_port(service);
        sleep(s);
        if (flag_set("WALNUT_TEST_DNS_HANG") && gettid() != getpid() && !reload_thread())
            sleep(30); /* a resolver that never answers the lookups in the background */
        if (flag_set("WALNUT_TEST_DNS_DOWN"))
            return EAI_NONAME;
        if (flag_set("WALNUT_TEST_DNS_BOTH"))
            return both(service, hints, res, real);
        node = flag_set("WALNUT_TEST_DNS_MOVED") ? "127.0.0.2" : "127.0.0.1";
    }
    return real(node, service, hints, res);
}
