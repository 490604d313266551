/* Built against the SPDK tree spdk-sys built (lib/nvmf's internal header). */
#include "nvmf_internal.h"
#include "spdk_pmem_shim.h"

bool
spdk_pmem_nvmf_subsystem_is_inactive(const struct spdk_nvmf_subsystem *subsystem)
{
	return subsystem->state == SPDK_NVMF_SUBSYSTEM_INACTIVE;
}
