#!/usr/bin/env bash
# scripts/rpc.py for SPDK's scripts in the guest: the call is made on the
# host, by SPDK's own rpc.py against the target's socket (the target runs
# there); stdout, stderr and the exit status come back as they were.
# Builtins only but socat: each process costs a TCG guest a fraction of a
# second, and a script makes dozens of calls.
#
# The request: "rpc" and each argument hex-encoded after an "x" (so an
# empty one survives). The answer (tests/integration/spdk_nvmf_scripts.rs): the exit
# status, a line; stdout's length in bytes, a line; stdout; stderr; ".".
set -u
export LC_ALL=C
request=rpc
for a in "$@"; do
  a="x$a" hex=
  for ((i = 0; i < ${#a}; i++)); do printf -v h '%02x' "'${a:i:1}"; hex+=$h; done
  request+=" $hex"
done
answer=$(echo "$request" | socat -t 600 - "TCP:127.0.0.1:$STEP_PORT")
rc=${answer%%$'\n'*} rest=${answer#*$'\n'}
n=${rest%%$'\n'*} rest=${rest#*$'\n'}
printf '%s' "${rest:0:n}"
rest=${rest:n}
printf '%s' "${rest%.}" >&2
exit "$rc"
