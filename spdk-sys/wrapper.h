/* The SPDK v20.07 API the safe layer and the tests need; bindgen reads this. */
#include "spdk/stdinc.h"
#include "spdk/env.h"
#include "spdk/event.h"
#include "spdk/thread.h"
#include "spdk/log.h"
#include "spdk/json.h"
#include "spdk/jsonrpc.h"
#include "spdk/rpc.h"
#include "spdk/bdev.h"
#include "spdk/bdev_module.h"
#include "spdk/nvme_spec.h"
#include "spdk/nvmf_spec.h"
#include "spdk/nvmf.h"
#include "spdk/nvme.h"
#include "spdk/version.h"
/* The pmem bdev module's own header: create_pmem_disk, delete_pmem_disk. */
#include "bdev_pmem.h"
/* Getters for internal state SPDK offers none for (shim/spdk_pmem_shim.c). */
#include "spdk_pmem_shim.h"
#ifdef SPDK_PMEM_RBD
/* Ceph's client libraries, for RBD images served from Rust (feature rbd). */
#include <rados/librados.h>
#include <rbd/librbd.h>
#endif
