"""For every spdk-rpc (PyPI spdk 26.x) command whose JSON-RPC method is in
METHODS (argv[1], a JSON list), print the params the command sends when given
only its required arguments: {"method": params, ...}.

Required positional arguments get placeholder values ("1" parses as both a
string and a number); the point is the optional fields the client adds with
their default values, which is what a 20.07 target sees from a plain call.
"""
import argparse
import contextlib
import io
import json
import sys

from spdk import spdk_rpc
from spdk.rpc.client import JSONRPCDryRunClient

methods = set(json.loads(sys.argv[1]))
captured = {}


class Capture(JSONRPCDryRunClient):
    def call(self, method, params=None):
        captured.setdefault(method, params or {})


parser = None
orig_parse = argparse.ArgumentParser.parse_args


def grab(self, *a, **k):
    global parser
    parser = self
    raise SystemExit(0)


argparse.ArgumentParser.parse_args = grab
with contextlib.suppress(SystemExit):
    spdk_rpc.main()
argparse.ArgumentParser.parse_args = orig_parse

subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
for name, sub in subparsers.choices.items():
    if name not in methods:
        continue
    argv = [name]
    for action in sub._actions:
        if action.required and action.option_strings:
            argv += [action.option_strings[0], "1"]
    for action in sub._actions:
        if not action.option_strings and action.dest != "help":
            n = action.nargs
            argv += ["1"] if n in (None, "?", "+") or isinstance(n, int) and n == 1 else (["1"] if n == "+" else [])
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = parser.parse_args(argv)
            args.client = Capture()
            args.func(args)
    except BaseException:
        continue
print(json.dumps(captured, indent=1, sort_keys=True))
