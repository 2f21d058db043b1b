/*
 * test_bridge_name.c - the Maildir directory name given to a local part.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bridge.h"
#include "buf.h"

static void test_names(void **state)
{
    (void)state;
    static const struct { const char *local, *want; } rows[] = {
        { "bob", "bob" },
        { "Alice.Smith", "alice.smith" },
        { "user+tag", "user+tag" },
        { "a_b-c", "a_b-c" },
        { "", "_" },
        { ".", "_" },
        { "..", "_." },
        { ".hidden", "_hidden" },
        { "../../etc", "_._.._etc" },
        { "a/b", "a_b" },
        { "sp ace", "sp_ace" },
        { "\xc3\xbcser", "__ser" },
        { "0123456789012345678901234567890123456789012345678901234567890123456789",
          "0123456789012345678901234567890123456789012345678901234567890123" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct buf out = BUF_INIT;
        buf_puts(&out, "prefix/");
        bridge_mailbox_name(rows[i].local, &out);
        assert_string_equal(buf_cstr(&out) + strlen("prefix/"), rows[i].want);
        assert_null(strchr(buf_cstr(&out) + strlen("prefix/"), '/'));
        buf_release(&out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_names) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
