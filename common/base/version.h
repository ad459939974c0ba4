/* version.h - the version of presenced and its tools (--version, the man
 * pages, presenced_build_info). CHECKLIST: bump with a release; the
 * Dockerfile and deploy/ do not repeat it. */
#ifndef PD_VERSION_H
#define PD_VERSION_H
#define PD_VERSION "0.1.0"
#endif
