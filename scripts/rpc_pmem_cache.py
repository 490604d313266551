"""A plugin for SPDK's rpc.py: the pmem write-back cache's methods, which
SPDK 20.07's rpc.py does not know.

    PYTHONPATH=scripts rpc.py --plugin rpc_pmem_cache bdev_pmem_cache_create \
        -b wb0 --slots 65536 rbd0 /dev/shm/wb0.pool
    PYTHONPATH=scripts rpc.py --plugin rpc_pmem_cache bdev_pmem_cache_flush wb0
    PYTHONPATH=scripts rpc.py --plugin rpc_pmem_cache bdev_pmem_cache_delete wb0
"""


def spdk_rpc_plugin_initialize(subparsers):
    def create(args):
        params = {"name": args.name, "base_bdev": args.base_bdev, "pool": args.pool}
        if args.slots is not None:
            params["slots"] = args.slots
        if args.wait_timeout_ms is not None:
            params["wait_timeout_ms"] = args.wait_timeout_ms
        if args.accept_damaged_log:
            params["accept_damaged_log"] = True
        print(args.client.call("bdev_pmem_cache_create", params))

    p = subparsers.add_parser(
        "bdev_pmem_cache_create",
        help="Put a libpmemblk pool in front of a bdev as a write-back cache "
             "(the pool is opened and replayed if it exists, created with --slots if not)")
    p.add_argument("-b", "--name", required=True, help="the cache bdev's name")
    p.add_argument("-s", "--slots", type=int,
                   help="cached blocks of a pool to create (at least this many)")
    p.add_argument("-t", "--wait-timeout-ms", type=int,
                   help="how long a host's FLUSH, or a write waiting for room in a full "
                        "cache, waits before it fails (default 10000; 0: as long as it takes)")
    p.add_argument("--accept-damaged-log", action="store_true",
                   help="replay a damaged log up to the damage and give up the writes "
                        "after it (refused otherwise)")
    p.add_argument("base_bdev", help="the bdev behind the cache (an RBD bdev, say)")
    p.add_argument("pool", help="path of the libpmemblk pool holding the cache's log")
    p.set_defaults(func=create)

    def flush(args):
        args.client.call("bdev_pmem_cache_flush", {"name": args.name})

    p = subparsers.add_parser(
        "bdev_pmem_cache_flush",
        help="Return once everything the cache acknowledged is in its backing bdev")
    p.add_argument("name", help="the cache bdev's name")
    p.set_defaults(func=flush)

    def delete(args):
        args.client.call("bdev_pmem_cache_delete", {"name": args.name})

    p = subparsers.add_parser(
        "bdev_pmem_cache_delete",
        help="Delete a cache bdev; what it did not destage stays in its pool")
    p.add_argument("name", help="the cache bdev's name")
    p.set_defaults(func=delete)
