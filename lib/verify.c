/*
 * verify.c - names of recipient verification answers (verify.h), for logs.
 */
#include "verify.h"

const char *verify_answer_name(enum verify_answer a)
{
    switch (a) {
    case VERIFY_EXISTS:
        return "ok";
    case VERIFY_DUNNO:
        return "unknown";
    case VERIFY_TEMPFAIL:
        return "tempfail";
    }
    return "?";
}
