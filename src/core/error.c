/*
 * core/error.c: text and names for walnut's error space. Any thread; no state.
 */
#include "walnut/core.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static const char *const wn_err_text[] = {
#define WN_ERR_TEXT(code, text) text,
    WN_ERRNO_MAP(WN_ERR_TEXT)
#undef WN_ERR_TEXT
};

static const char *const wn_err_names[] = {
#define WN_ERR_NAME(code, text) "WN_" #code,
    WN_ERRNO_MAP(WN_ERR_NAME)
#undef WN_ERR_NAME
};

static int is_own(int err)
{
    return err > WN_ERR_FIRST_ && err < WN_ERR_LAST_;
}

bool wn_err_local(int err)
{
    return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS || err == UV_ENOMEM ||
           err == WN_ENOMEM;
}

const char *wn_strerror(int err)
{
    if (err == 0)
        return "success";
    if (is_own(err))
        return wn_err_text[err - WN_ERR_FIRST_ - 1];
    /* libuv codes are negated errno values on Unix, plus a few of its own. */
    return uv_strerror(err);
}

const char *wn_err_name(int err)
{
    if (err == 0)
        return "OK";
    if (is_own(err))
        return wn_err_names[err - WN_ERR_FIRST_ - 1];
    return uv_err_name(err);
}

bool wn_test_hooks(void)
{
    const char *hooks = getenv("WALNUT_TEST_HOOKS");
    return hooks != NULL && strcmp(hooks, "1") == 0;
}

bool wn_test_fault(const char *var)
{
    const char *path = wn_test_hooks() ? getenv(var) : NULL;
    return path != NULL && access(path, F_OK) == 0;
}
