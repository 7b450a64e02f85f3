"""Compile Conduit's .proto files to Python message modules and expose them.

Usage:
    from conduit_protos import empty_pb2, messages_pb2, helloworld_pb2, chat_pb2, log_pb2, user_pb2, cache_pb2, accounts_pb2

The protos (../../protos relative to this file) are compiled with /usr/bin/protoc
(only `_pb2` message modules; there is no grpc_tools plugin, so stubs and
handlers are built with grpc's generic API by the callers). Compilation runs on
every import of this module (once per process), into $CONDUIT_PY_PROTO_DIR if
set (kept), otherwise a fresh temp dir (deleted again as soon as the modules
are loaded), so stale generated files never matter.

The generated modules are loaded by file path under flat names (empty_pb2, ...)
instead of their package paths: `grpc/testing/*_pb2.py` would otherwise have to
be imported as `grpc.testing.*`, which collides with the installed `grpc`
package. None of the modules we load imports another generated module
(test.proto, which does, only declares services and is not needed).
The output dir is deliberately NOT put on sys.path (its `grpc/` folder must not
shadow the real package); instead each module is registered in sys.modules, so
a plain `import messages_pb2` also works after importing this module.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

PROTOC = os.environ.get("PROTOC", "/usr/bin/protoc")
PROTO_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "protos"))

# module name -> .proto path relative to PROTO_ROOT
_PROTOS = {
    "empty_pb2": "grpc/testing/empty.proto",
    "messages_pb2": "grpc/testing/messages.proto",
    "helloworld_pb2": "helloworld/helloworld.proto",
    "chat_pb2": "chat/v1/chat.proto",
    "log_pb2": "log/v1/log.proto",
    "user_pb2": "user/v1/user.proto",
    "status_pb2": "google/rpc/status.proto",
    "error_details_pb2": "google/rpc/error_details.proto",
    "cache_pb2": "cache/v1/cache.proto",
    "accounts_pb2": "accounts/v1/accounts.proto",
}


def _compile_and_load():
    out = os.environ.get("CONDUIT_PY_PROTO_DIR")
    if out:
        os.makedirs(out, exist_ok=True)
    else:
        out = tempfile.mkdtemp(prefix="conduit_py_protos_")
    try:
        return _compile_and_load_into(out)
    finally:
        if not os.environ.get("CONDUIT_PY_PROTO_DIR"):
            # Once executed, the modules live in memory; removing the temp dir
            # now means a killed process can't leak it.
            shutil.rmtree(out, ignore_errors=True)


def _compile_and_load_into(out):
    # -I PROTO_ROOT keeps the canonical descriptor file names
    # (e.g. "grpc/testing/messages.proto"), matching the other implementations.
    cmd = [PROTOC, "-I", PROTO_ROOT, "--python_out=" + out] + list(_PROTOS.values())
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("protoc failed (%s): %s" % (" ".join(cmd), proc.stderr.strip()))
    modules = {}
    for name, proto in _PROTOS.items():
        if name in sys.modules:  # already loaded in this process
            modules[name] = sys.modules[name]
            continue
        path = os.path.join(out, proto[:-len(".proto")] + "_pb2.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        modules[name] = module
    return modules


_modules = _compile_and_load()
empty_pb2 = _modules["empty_pb2"]
messages_pb2 = _modules["messages_pb2"]
helloworld_pb2 = _modules["helloworld_pb2"]
chat_pb2 = _modules["chat_pb2"]
log_pb2 = _modules["log_pb2"]
user_pb2 = _modules["user_pb2"]
status_pb2 = _modules["status_pb2"]
error_details_pb2 = _modules["error_details_pb2"]
cache_pb2 = _modules["cache_pb2"]
accounts_pb2 = _modules["accounts_pb2"]

__all__ = ["PROTO_ROOT", "empty_pb2", "messages_pb2", "helloworld_pb2", "chat_pb2", "log_pb2", "user_pb2",
           "status_pb2", "error_details_pb2", "cache_pb2", "accounts_pb2"]
