/*
 * test_authdb.c - the AUTH user table (lib/authdb.c): loading, verifying, and the exact
 * "FILE:LINE: message" errors for malformed files. Hashes are made here with libcrypt, so the
 * test knows every password.
 */
#include <crypt.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "authdb.h"
#include "buf.h"

struct fixture {
    char dir[64];       /* mkdtemp directory */
    char path[128];     /* dir/users */
};

/* A crypt(3) hash of password made with the given method prefix (NULL for DES "ab" salt). */
static char *make_hash(const char *prefix, const char *password)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (prefix != NULL)
        assert_non_null(crypt_gensalt_rn(prefix, 0, NULL, 0, setting, sizeof setting));
    else
        strcpy(setting, "ab");
    struct crypt_data *cd = calloc(1, sizeof *cd);
    assert_non_null(cd);
    char *h = crypt_rn(password, setting, cd, sizeof *cd);
    assert_non_null(h);
    char *copy = strdup(h);
    free(cd);
    return copy;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    strcpy(fx->dir, "/tmp/test_authdb.XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->path, sizeof fx->path, "%s/users", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    unlink(fx->path);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

struct verify_case {
    const char *user;
    const char *password;
    bool ok;
};

static void test_verify_table(void **state)
{
    struct fixture *fx = *state;
    char *h6 = make_hash("$6$", "wonderland");
    char *hy = make_hash("$y$", "can we fix it");
    char *h5 = make_hash("$5$", "c4r0l pass");
    char *hY = make_hash("$y$", "uppercase");
    char *hdes = make_hash(NULL, "dave1234");
    assert_memory_equal(h6, "$6$", 3);
    assert_memory_equal(hy, "$y$", 3);
    assert_memory_equal(h5, "$5$", 3);
    assert_int_equal(strlen(hdes), 13);

    struct buf text = BUF_INIT;
    buf_printf(&text,
               "# AUTH users\n"
               "\n"
               "alice %s\n"
               "   \t\n"
               "  bob\t%s  \n"
               "carol@example.test %s\r\n"
               "    # indented comment\n"
               "Bob %s\n"
               "dave %s",       /* no newline at the end */
               h6, hy, h5, hY, hdes);
    write_file(fx->path, text.data, text.len);

    struct buf err = BUF_INIT;
    struct authdb *db = authdb_load(fx->path, &err);
    assert_string_equal(buf_cstr(&err), "");
    assert_non_null(db);

    static const struct verify_case cases[] = {
        { "alice", "wonderland", true },
        { "alice", "Wonderland", false },
        { "alice", "wonderland ", false },
        { "alice", "", false },
        { "bob", "can we fix it", true },
        { "bob", "can we fix it?", false },
        { "bob", "uppercase", false },
        { "Bob", "uppercase", true },
        { "Bob", "can we fix it", false },
        { "BOB", "uppercase", false },
        { "carol@example.test", "c4r0l pass", true },
        { "carol@example.test", "c4r0l", false },
        { "Carol@example.test", "c4r0l pass", false },
        { "carol", "c4r0l pass", false },
        { "dave", "dave1234", true },
        { "dave", "dave123", false },
        { "Alice", "wonderland", false },
        { "alice ", "wonderland", false },
        { "mallory", "wonderland", false },
        { "", "wonderland", false },
        { "#", "x", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool ok = authdb_verify(db, cases[i].user, cases[i].password);
        if (ok != cases[i].ok)
            fail_msg("case %zu (%s / %s): got %d, want %d", i, cases[i].user, cases[i].password, ok,
                     cases[i].ok);
    }

    authdb_free(db);
    authdb_free(NULL);
    buf_release(&err);
    buf_release(&text);
    free(h6);
    free(hy);
    free(h5);
    free(hY);
    free(hdes);
}

static void test_empty_file(void **state)
{
    struct fixture *fx = *state;
    write_file(fx->path, "# nobody yet\n\n", 14);
    struct buf err = BUF_INIT;
    struct authdb *db = authdb_load(fx->path, &err);
    assert_non_null(db);
    assert_string_equal(buf_cstr(&err), "");
    assert_false(authdb_verify(db, "alice", "wonderland"));
    assert_false(authdb_verify(db, "", ""));
    authdb_free(db);
}

static void test_longest_user_name(void **state)
{
    struct fixture *fx = *state;
    char name[256];
    memset(name, 'n', 255);
    name[255] = '\0';
    char *h = make_hash("$5$", "pw");
    struct buf text = BUF_INIT;
    buf_printf(&text, "%s %s\n", name, h);
    write_file(fx->path, text.data, text.len);
    struct buf err = BUF_INIT;
    struct authdb *db = authdb_load(fx->path, &err);
    assert_non_null(db);
    assert_true(authdb_verify(db, name, "pw"));
    name[254] = '\0';
    assert_false(authdb_verify(db, name, "pw"));
    authdb_free(db);
    buf_release(&text);
    buf_release(&err);
    free(h);
}

struct load_error_case {
    const char *text;
    size_t len;
    const char *want;   /* every "%1$s" is the file's path */
};

#define LIT(s) s, sizeof s - 1
#define H6 "$6$saltsalt$hashhashhash"

static const struct load_error_case load_error_cases[] = {
    { LIT("alice\n"), "%1$s:1: missing password hash for user \"alice\"" },
    { LIT("alice   \t\r\n"), "%1$s:1: missing password hash for user \"alice\"" },
    { LIT("# c\n\nalice " H6 " extra\n"), "%1$s:3: unexpected text after the password hash" },
    { LIT("alice " H6 " # comment\n"), "%1$s:1: unexpected text after the password hash" },
    { LIT("alice plaintext\n"),
      "%1$s:1: password hash must start with '$' or be a 13-character DES hash" },
    { LIT("alice abcdefghijkl*\n"),
      "%1$s:1: password hash must start with '$' or be a 13-character DES hash" },
    { LIT("alice abcdefghijklmn\n"),
      "%1$s:1: password hash must start with '$' or be a 13-character DES hash" },
    { LIT("alice *\n"), "%1$s:1: password hash must start with '$' or be a 13-character DES hash" },
    { LIT("alice $foo$bar\n"), "%1$s:1: password hash method not supported by libcrypt" },
    { LIT("alice $\n"), "%1$s:1: password hash method not supported by libcrypt" },
    { LIT("al\x01ice " H6 "\n"), "%1$s:1: non-printable character in user name" },
    { LIT("al\0ce " H6 "\n"), "%1$s:1: non-printable character in user name" },
    { LIT("\xc3\xa5lice " H6 "\n"), "%1$s:1: non-printable character in user name" },
    { LIT("alice $6$a\x7f" "b\n"), "%1$s:1: non-printable character in password hash" },
    { LIT("alice " H6 "\nbob " H6 "\nalice " H6 "\n"),
      "%1$s:3: duplicate user \"alice\" (first defined on line 1)" },
    { LIT("alice " H6 "\nalice " H6 "\nalice " H6 "\n"),
      "%1$s:2: duplicate user \"alice\" (first defined on line 1)\n"
      "%1$s:3: duplicate user \"alice\" (first defined on line 1)" },
    /* every problem is reported, in line order */
    { LIT("alice " H6 "\nbad\nalice " H6 "\nx plain\n"),
      "%1$s:2: missing password hash for user \"bad\"\n"
      "%1$s:3: duplicate user \"alice\" (first defined on line 1)\n"
      "%1$s:4: password hash must start with '$' or be a 13-character DES hash" },
};

static void test_load_errors_table(void **state)
{
    struct fixture *fx = *state;
    for (size_t i = 0; i < sizeof load_error_cases / sizeof load_error_cases[0]; i++) {
        const struct load_error_case *c = &load_error_cases[i];
        write_file(fx->path, c->text, c->len);
        struct buf err = BUF_INIT, want = BUF_INIT;
        buf_printf(&want, c->want, fx->path);
        struct authdb *db = authdb_load(fx->path, &err);
        if (db != NULL)
            fail_msg("case %zu loaded", i);
        if (strcmp(buf_cstr(&err), buf_cstr(&want)) != 0)
            fail_msg("case %zu:\n got: %s\nwant: %s", i, buf_cstr(&err), buf_cstr(&want));
        buf_release(&err);
        buf_release(&want);
    }
}

static void test_user_too_long(void **state)
{
    struct fixture *fx = *state;
    struct buf text = BUF_INIT, err = BUF_INIT, want = BUF_INIT;
    buf_puts(&text, "ok " H6 "\n");
    for (int i = 0; i < 256; i++)
        buf_putc(&text, 'n');
    buf_puts(&text, " " H6 "\n");
    write_file(fx->path, text.data, text.len);
    assert_null(authdb_load(fx->path, &err));
    buf_printf(&want, "%s:2: user name longer than 255 characters", fx->path);
    assert_string_equal(buf_cstr(&err), buf_cstr(&want));
    buf_release(&text);
    buf_release(&err);
    buf_release(&want);
}

/* A file that is not a user table at all gives 20 lines and a count, not thousands. */
static void test_error_cap(void **state)
{
    struct fixture *fx = *state;
    struct buf text = BUF_INIT, err = BUF_INIT, want = BUF_INIT;
    for (int i = 0; i < 25; i++)
        buf_puts(&text, "lonely\n");
    write_file(fx->path, text.data, text.len);
    assert_null(authdb_load(fx->path, &err));
    for (int i = 1; i <= 20; i++)
        buf_printf(&want, "%s:%d: missing password hash for user \"lonely\"\n", fx->path, i);
    buf_printf(&want, "%s: 5 more errors not shown", fx->path);
    assert_string_equal(buf_cstr(&err), buf_cstr(&want));
    buf_release(&text);
    buf_release(&err);
    buf_release(&want);
}

static void test_missing_file(void **state)
{
    struct fixture *fx = *state;
    struct buf err = BUF_INIT, want = BUF_INIT;
    char path[160];
    snprintf(path, sizeof path, "%s/no-such-file", fx->dir);
    buf_puts(&err, "earlier text; ");
    assert_null(authdb_load(path, &err));
    buf_printf(&want, "earlier text; %s: cannot open: No such file or directory", path);
    assert_string_equal(buf_cstr(&err), buf_cstr(&want));
    buf_release(&err);
    buf_release(&want);

    /* a directory opens but cannot be read */
    assert_null(authdb_load(fx->dir, &err));
    buf_printf(&want, "%s: read error: Is a directory", fx->dir);
    assert_string_equal(buf_cstr(&err), buf_cstr(&want));
    buf_release(&err);
    buf_release(&want);
}

struct thread_arg {
    const struct authdb *db;
    int good, bad;
};

static void *verify_thread(void *p)
{
    struct thread_arg *a = p;
    for (int i = 0; i < 3; i++) {
        a->good += authdb_verify(a->db, "alice", "wonderland");
        a->bad += authdb_verify(a->db, "alice", "nope");
        a->bad += authdb_verify(a->db, "ghost", "wonderland");
    }
    return NULL;
}

/* authdb_verify from several threads at once gives the same answers (run under ASan too). */
static void test_verify_threads(void **state)
{
    struct fixture *fx = *state;
    char *h = make_hash("$5$", "wonderland");
    struct buf text = BUF_INIT, err = BUF_INIT;
    buf_printf(&text, "alice %s\n", h);
    write_file(fx->path, text.data, text.len);
    struct authdb *db = authdb_load(fx->path, &err);
    assert_non_null(db);
    pthread_t t[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){ db, 0, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, verify_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(args[i].good, 3);
        assert_int_equal(args[i].bad, 0);
    }
    authdb_free(db);
    buf_release(&text);
    buf_release(&err);
    free(h);
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The fastest of five checks of user/password, in seconds. */
static double fastest_verify(const struct authdb *db, const char *user, const char *password)
{
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
        double t0 = now_sec();
        (void)authdb_verify(db, user, password);
        double t = now_sec() - t0;
        if (t < best)
            best = t;
    }
    return best;
}

/*
 * An unknown user costs a yescrypt run like a known $y$ user does. Without the dummy hash the
 * lookup alone would be thousands of times faster, so a factor of 4 leaves room for noise.
 */
static void test_unknown_user_costs_a_hash(void **state)
{
    struct fixture *fx = *state;
    char *h = make_hash("$y$", "pw");
    struct buf text = BUF_INIT, err = BUF_INIT;
    buf_printf(&text, "alice %s\n", h);
    write_file(fx->path, text.data, text.len);
    struct authdb *db = authdb_load(fx->path, &err);
    assert_non_null(db);
    double known = fastest_verify(db, "alice", "wrong");
    double unknown = fastest_verify(db, "nobody", "wrong");
    if (unknown < known / 4)
        fail_msg("unknown user took %.6fs, known user %.6fs", unknown, known);
    authdb_free(db);
    buf_release(&text);
    buf_release(&err);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verify_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_longest_user_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_user_costs_a_hash, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
