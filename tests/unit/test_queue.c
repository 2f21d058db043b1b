/*
 * test_queue.c - queue ids (format, time order, uniqueness) and key names. The enqueue itself
 * runs against a real redis-server in test_redis.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "buf.h"
#include "queue.h"
#include "support/peer.h"

static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The 50-bit millisecond time in the first 10 digits. */
static long long id_time(const char *id)
{
    long long v = 0;
    for (int i = 0; i < 10; i++)
        v = v * 32 + (long long)(strchr(alphabet, id[i]) - alphabet);
    return v;
}

static void test_id_format(void **state)
{
    (void)state;
    for (int n = 0; n < 1000; n++) {
        char id[QUEUE_ID_LEN + 1];
        memset(id, 'x', sizeof id);
        long long before = wall_ms();
        queue_id_new(id);
        long long after = wall_ms();
        assert_int_equal(strlen(id), 20);
        assert_int_equal(QUEUE_ID_LEN, 20);
        for (int i = 0; i < QUEUE_ID_LEN; i++) {
            assert_non_null(strchr(alphabet, id[i]));
            assert_null(strchr("ILOUabcdefghijklmnopqrstuvwxyz", id[i]));
        }
        long long t = id_time(id);
        assert_true(t >= before && t <= after);
    }
}

static void test_id_order_across_ms(void **state)
{
    (void)state;
    char prev[QUEUE_ID_LEN + 1];
    queue_id_new(prev);
    for (int n = 0; n < 20; n++) {
        tp_sleep_ms(2);
        char id[QUEUE_ID_LEN + 1];
        queue_id_new(id);
        assert_true(strcmp(prev, id) < 0);
        assert_true(id_time(prev) < id_time(id));
        memcpy(prev, id, sizeof id);
    }
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_id_unique(void **state)
{
    (void)state;
    enum { N = 100000 };
    char (*ids)[QUEUE_ID_LEN + 1] = malloc(sizeof *ids * N);
    assert_non_null(ids);
    for (int i = 0; i < N; i++)
        queue_id_new(ids[i]);
    qsort(ids, N, sizeof *ids, cmp_id);
    for (int i = 1; i < N; i++)
        assert_true(strcmp(ids[i - 1], ids[i]) < 0);
    /* The random half really varies: a constant would give many equal suffixes in one ms. */
    int same_suffix = 0;
    for (int i = 1; i < N; i++)
        same_suffix += memcmp(ids[i - 1] + 10, ids[i] + 10, 10) == 0;
    assert_int_equal(same_suffix, 0);
    free(ids);
}

static void test_key(void **state)
{
    (void)state;
    static const struct {
        const char *prefix, *kind, *id, *want;
    } cases[] = {
        { "mxg", "msg", "01HZX0000000000000AB", "mxg:msg:{01HZX0000000000000AB}" },
        { "mxg", "body", "0000000000000000000Z", "mxg:body:{0000000000000000000Z}" },
        { "site1", "rcpt", "ABC", "site1:rcpt:{ABC}" },
        { "a:b", "log", "X", "a:b:log:{X}" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b = BUF_INIT;
        queue_key(&b, cases[i].prefix, cases[i].kind, cases[i].id);
        assert_string_equal(buf_cstr(&b), cases[i].want);
        buf_release(&b);
    }
    /* It appends. */
    struct buf b = BUF_INIT;
    buf_puts(&b, "key=");
    queue_key(&b, "p", "msg", "I");
    assert_string_equal(buf_cstr(&b), "key=p:msg:{I}");
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_format),
        cmocka_unit_test(test_id_order_across_ms),
        cmocka_unit_test(test_id_unique),
        cmocka_unit_test(test_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
