"""Serve the demo with another interpreter (PyPy in CI) and call it with grpcio.

Usage: python tests/pypy_smoke.py PATH_TO_OTHER_PYTHON
Prints '2 passed, 0 failed' style summary; exits non-zero on failure.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def main(python: str) -> int:
    import grpc

    from puregrpc.demo import _proto as pb

    server = subprocess.Popen(
        [python, "-m", "puregrpc", "serve", "puregrpc.demo:register", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    port = None
    assert server.stderr is not None
    for line in server.stderr:
        if " on localhost:" in line:
            port = int(line.split(" on localhost:")[1].split()[0])
            break
    if port is None:
        print("server did not start")
        return 1
    passed = failed = 0
    channel = grpc.insecure_channel(f"localhost:{port}")
    try:
        say = channel.unary_unary(
            "/puregrpc.demo.Greeter/SayHello",
            request_serializer=pb.HelloRequest.SerializeToString,
            response_deserializer=pb.HelloReply.FromString,
        )
        if say(pb.HelloRequest(name="pypy"), timeout=10).message == "Hello, pypy!":
            passed += 1
        else:
            failed += 1
        chat = channel.stream_stream(
            "/puregrpc.demo.RouteGuide/RouteChat",
            request_serializer=pb.RouteNote.SerializeToString,
            response_deserializer=pb.RouteNote.FromString,
        )
        notes = [pb.RouteNote(location=pb.Point(latitude=1, longitude=1), message=str(i)) for i in range(3)]
        if [n.message for n in chat(iter(notes), timeout=10)] == ["0", "0", "1"]:
            passed += 1
        else:
            failed += 1
    finally:
        channel.close()
        server.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = server.wait(10)
    if code == 0 and time.monotonic() - began < 2:
        passed += 1
    else:
        failed += 1
    print(f"pypy smoke: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
