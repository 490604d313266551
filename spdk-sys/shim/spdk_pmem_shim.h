/* State SPDK v20.07 keeps in its internal structs and offers no getter for. */
#ifndef SPDK_PMEM_SHIM_H
#define SPDK_PMEM_SHIM_H

#include <stdbool.h>

struct spdk_nvmf_subsystem;

/* Whether the subsystem is inactive: SPDK only assert()s it before destroying
 * one, which release builds compile out; the safe layer checks it first. */
bool spdk_pmem_nvmf_subsystem_is_inactive(const struct spdk_nvmf_subsystem *subsystem);

#endif
