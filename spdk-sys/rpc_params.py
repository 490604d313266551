"""Build-time helper of spdk-sys. Reads SPDK's C source (argv[1]) and
prints, for every RPC method and alias it registers, the top-level param
names its JSON decoder accepts:
{"method": ["field", ...] or null when the handler decodes no object}.
"""
import json
import os
import re
import sys

root = sys.argv[1]
src = ""
for d in ("lib", "module"):
    for dirpath, _, files in os.walk(os.path.join(root, d)):
        for f in files:
            if f.endswith(".c"):
                src += open(os.path.join(dirpath, f), errors="replace").read() + "\n"

decoders = {}
for m in re.finditer(r"spdk_json_object_decoder\s+(\w+)\s*\[\s*\]\s*=\s*\{(.*?)\};", src, re.S):
    decoders[m.group(1)] = re.findall(r'\{\s*"(\w+)"', m.group(2))

bodies = {}
for m in re.finditer(r"\n(\w+)\(struct spdk_jsonrpc_request \*request,\s*const struct spdk_json_val \*params\)\s*\{", src):
    start = m.end()
    depth, i = 1, start
    while depth and i < len(src):
        depth += {"{": 1, "}": -1}.get(src[i], 0)
        i += 1
    bodies[m.group(1)] = src[start:i]

methods = {}
for m in re.finditer(r'SPDK_RPC_REGISTER\("(\w+)",\s*(\w+),', src):
    body = bodies.get(m.group(2), "")
    d = re.search(r"spdk_json_decode_object\(params,\s*(\w+)", body)
    methods[m.group(1)] = decoders.get(d.group(1)) if d else None
for m in re.finditer(r"SPDK_RPC_REGISTER_ALIAS_DEPRECATED\((\w+),\s*(\w+)\)", src):
    methods[m.group(2)] = methods.get(m.group(1))
print(json.dumps(methods, indent=1, sort_keys=True))
