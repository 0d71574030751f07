"""grpc_client.py - an independent gRPC client for hotserve's tests: Python stubs generated at test time
by grpc_tools.protoc (Debian's python3-grpc-tools) from the repository's proto/grpc_predict_v2.proto, over
Debian's python3-grpcio. Nothing here shares code with the server."""
import importlib
import os
import re
import subprocess
import sys

import grpc  # noqa: F401  (re-exported for the tests)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
import hsys  # noqa: E402
from hsys import check  # noqa: E402

GRPC_LISTEN_RE = r"hotserve: listening on grpc://(\S+):(\d+)$"


def load_stubs(source, tmp):
    """Generates grpc_predict_v2_pb2(.py) and _pb2_grpc into tmp; returns (pb2, pb2_grpc)."""
    out = os.path.join(tmp, "stubs")
    os.makedirs(out, exist_ok=True)
    proto_dir = os.path.join(source, "proto")
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir, "--python_out", out,
                        "--grpc_python_out", out, os.path.join(proto_dir, "grpc_predict_v2.proto")],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "grpc_tools.protoc failed: %s" % r.stderr)
    sys.path.insert(0, out)
    return importlib.import_module("grpc_predict_v2_pb2"), importlib.import_module("grpc_predict_v2_pb2_grpc")


def grpc_target(srv):
    """host:port of a Server started with --grpc-port (read from its log)."""
    line = srv.wait_log(GRPC_LISTEN_RE, "the gRPC listening line")[0]
    m = re.search(GRPC_LISTEN_RE, line)
    return "%s:%s" % (m.group(1), m.group(2))


def channel(target, max_msg=256 << 20):
    return grpc.insecure_channel(target, options=[("grpc.max_send_message_length", max_msg),
                                                  ("grpc.max_receive_message_length", max_msg)])
