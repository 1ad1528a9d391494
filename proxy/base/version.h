/*
 * version.h -- the version of wsproxy and wsctl (built from the same tree), shown by --version and
 * in /metrics (wsproxy_build_info).
 */
#ifndef WSP_VERSION_H
#define WSP_VERSION_H

#define WSPROXY_VERSION "0.1.0"

#endif
