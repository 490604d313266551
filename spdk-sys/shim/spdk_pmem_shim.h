/* State SPDK v20.07 keeps in its internal structs and offers no getter for. */
#ifndef SPDK_PMEM_SHIM_H
#define SPDK_PMEM_SHIM_H

#include <stdbool.h>
#include <stdint.h>

struct spdk_nvmf_subsystem;

/* Whether the subsystem is inactive: SPDK only assert()s it before destroying
 * one, which release builds compile out; the safe layer checks it first. */
bool spdk_pmem_nvmf_subsystem_is_inactive(const struct spdk_nvmf_subsystem *subsystem);

/* The ticks the reactor on `lcore` spent in thread polls that did work (SPDK
 * counts them in struct spdk_reactor, for framework_get_reactors, and offers
 * no getter); false when there is no reactor on that core. */
bool spdk_pmem_reactor_busy_tsc(uint32_t lcore, uint64_t *busy_tsc);

#endif
