/* Built against the SPDK tree spdk-sys built (lib/nvmf's internal header,
 * spdk_internal/event.h for the reactors). */
#include "nvmf_internal.h"
#include "spdk_internal/event.h"
#include "spdk_pmem_shim.h"

bool
spdk_pmem_nvmf_subsystem_is_inactive(const struct spdk_nvmf_subsystem *subsystem)
{
	return subsystem->state == SPDK_NVMF_SUBSYSTEM_INACTIVE;
}

bool
spdk_pmem_reactor_busy_tsc(uint32_t lcore, uint64_t *busy_tsc)
{
	struct spdk_reactor *reactor = spdk_reactor_get(lcore);

	if (reactor == NULL) {
		return false;
	}
	*busy_tsc = reactor->busy_tsc;
	return true;
}
