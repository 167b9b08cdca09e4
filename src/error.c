/* SPDX-License-Identifier: MIT */
/* error.c -- error descriptions and the version. */
#include "fibers.h"

#include <netdb.h>
#include <string.h>

const char *fib_strerror(int err) {
  switch (err) {
#define FIB__STRERROR_CASE(name, text)                                         \
  case FIB_##name:                                                           \
    return text;
    FIB_ERRNO_MAP(FIB__STRERROR_CASE)
#undef FIB__STRERROR_CASE
#define FIB__EAI_STRERROR_CASE(name, n)                                        \
  case FIB_EAI_##name:                                                       \
    return gai_strerror(EAI_##name);
    FIB_EAI_MAP(FIB__EAI_STRERROR_CASE)
#undef FIB__EAI_STRERROR_CASE
  case 0:
    return "success";
  default: {
    /* Another kernel error, handed back unchanged by an I/O call. */
    const char *text = err < 0 && err > -4096 ? strerrordesc_np(-err) : NULL;
    return text ? text : "unknown error";
  }
  }
}

const char *fib_err_name(int err) {
  switch (err) {
#define FIB__ERR_NAME_CASE(name, text)                                         \
  case FIB_##name:                                                           \
    return #name;
    FIB_ERRNO_MAP(FIB__ERR_NAME_CASE)
#undef FIB__ERR_NAME_CASE
#define FIB__EAI_NAME_CASE(name, n)                                            \
  case FIB_EAI_##name:                                                       \
    return "EAI_" #name;
    FIB_EAI_MAP(FIB__EAI_NAME_CASE)
#undef FIB__EAI_NAME_CASE
  case 0:
    return "OK";
  default:
    return "UNKNOWN";
  }
}

int fib_version(void) {
  return FIB_VERSION_MAJOR * 10000 + FIB_VERSION_MINOR * 100 +
         FIB_VERSION_PATCH;
}
