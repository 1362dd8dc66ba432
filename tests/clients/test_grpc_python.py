#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""lychee-server from Python: Debian's python3-grpcio with the stubs proto/ generates.

Run by CTest (grpc_python_client_test) with /usr/bin/python3 from the source root, or by hand:
  LYCHEE_PROTO_PYTHON_DIR=build/h-grpc/proto/python /usr/bin/python3 tests/clients/test_grpc_python.py

Starts its own lychee-server (LYCHEE_BIN_DIR, default build/bin) on 127.0.0.1 port 0 with the
embedded stories260K model and always kills it. Covers streaming, concurrency, abort (RPC and
cancellation), deadlines, malformed input and grpc.health.v1; and with real credentials (TLS
channel credentials and the API key as call credentials) against a second server.
"""
import concurrent.futures
import glob
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
import unittest


def _proto_python_dir():
    env = os.environ.get("LYCHEE_PROTO_PYTHON_DIR")
    if env:
        return env
    found = sorted(glob.glob("build/*/proto/python"), key=os.path.getmtime)
    if not found:
        sys.exit("no generated Python stubs: set LYCHEE_PROTO_PYTHON_DIR")
    return found[-1]


PROTO_DIR = _proto_python_dir()
sys.path.insert(0, PROTO_DIR)

import grpc  # noqa: E402  (Debian python3-grpcio)
from lychee.v1 import generate_pb2, generate_pb2_grpc  # noqa: E402


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# grpc.health.v1's stubs cannot be imported as `grpc.health...` (the grpc package shadows it),
# so the messages are loaded from their file and the method is called by name.
health_pb2 = _load_module("lychee_health_pb2", os.path.join(PROTO_DIR, "grpc/health/v1/health_pb2.py"))

BIN_DIR = os.environ.get("LYCHEE_BIN_DIR", "build/bin")
MODEL = "models/stories260K"
SERVER = None
ADDRESS = None


class _Server:
    def __init__(self, extra_args=()):
        args = [os.path.join(BIN_DIR, "lychee-server"), "--model", MODEL, "--host", "127.0.0.1",
                "--grpc-port", "0", "--http-port", "0", *extra_args]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self.port = None
        ready = threading.Event()

        def read():
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                match = re.search(r"grpc listening on \S*:(\d+)", line)
                if match:
                    self.port = int(match.group(1))
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(60) or self.port is None:
            self.kill()
            raise RuntimeError("lychee-server did not start:\n" + "".join(self.lines))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def setUpModule():
    global SERVER, ADDRESS
    SERVER = _Server()
    ADDRESS = f"127.0.0.1:{SERVER.port}"


def tearDownModule():
    if SERVER is not None:
        SERVER.kill()


def greedy(prompt, max_tokens, request_id="", ignore_eos=False):
    return generate_pb2.GenerateRequest(
        request_id=request_id, text=prompt,
        sampling_params=generate_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens,
                                                    ignore_eos=ignore_eos))


def collect(responses):
    out = {"text": "", "ids": [], "finish_reason": None, "completion_tokens": 0, "chunks": 0}
    for r in responses:
        kind = r.WhichOneof("response")
        if kind == "chunk":
            out["chunks"] += 1
            out["text"] += r.chunk.text
            out["ids"].extend(r.chunk.token_ids)
        elif kind == "complete":
            out["finish_reason"] = r.complete.finish_reason
            out["completion_tokens"] = r.complete.completion_tokens
    return out


class GrpcPythonClientTest(unittest.TestCase):
    def setUp(self):
        self.channel = grpc.insecure_channel(ADDRESS)
        self.stub = generate_pb2_grpc.LycheeServiceStub(self.channel)

    def tearDown(self):
        self.channel.close()
        self.assertIsNone(SERVER.proc.poll(), "the server died:\n" + "".join(SERVER.lines))

    def live_requests(self):
        loads = self.stub.GetLoads(generate_pb2.GetLoadsRequest(), timeout=5)
        return loads.num_running_reqs + loads.num_waiting_reqs

    def wait_idle(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.live_requests() == 0:
                return True
            time.sleep(0.02)
        return False

    def test_streaming(self):
        result = collect(self.stub.Generate(greedy("Once upon a time", 32, "py-stream"), timeout=60))
        self.assertIn(result["finish_reason"], ("length", "stop"))
        self.assertGreater(result["chunks"], 0)
        self.assertEqual(result["completion_tokens"], len(result["ids"]))
        # The streamed text is the detokenized stream of ids.
        text = self.stub.Detokenize(generate_pb2.DetokenizeRequest(token_ids=result["ids"]),
                                    timeout=5).text
        self.assertEqual(result["text"], text)
        # Greedy is deterministic.
        again = collect(self.stub.Generate(greedy("Once upon a time", 32), timeout=60))
        self.assertEqual(again["ids"], result["ids"])

    def test_concurrent(self):
        prompts = ["Once upon a time", "The cat", "Lily saw", "A big dog", "The sun", "Tom had"]
        solo = [collect(self.stub.Generate(greedy(p, 40), timeout=60)) for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            together = list(pool.map(
                lambda p: collect(self.stub.Generate(greedy(p, 40), timeout=60)), prompts))
        for p, a, b in zip(prompts, solo, together):
            self.assertEqual(a["ids"], b["ids"], p)

    def test_abort_rpc(self):
        call = self.stub.Generate(greedy("Once upon a time", 400, "py-abort", ignore_eos=True),
                                  timeout=60)
        first = next(call)
        self.assertEqual(first.WhichOneof("response"), "chunk")
        self.stub.Abort(generate_pb2.AbortRequest(request_ids=["py-abort"]), timeout=5)
        rest = collect(call)
        self.assertEqual(rest["finish_reason"], "abort")
        self.assertLess(rest["completion_tokens"], 400)
        self.assertTrue(self.wait_idle())

    def test_cancel(self):
        call = self.stub.Generate(greedy("Once upon a time", 400, "py-cancel", ignore_eos=True),
                                  timeout=60)
        next(call)
        call.cancel()
        with self.assertRaises(grpc.RpcError) as caught:
            collect(call)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.CANCELLED)
        self.assertTrue(self.wait_idle())

    def test_deadline(self):
        with self.assertRaises(grpc.RpcError) as caught:
            # 0.5 ms: shorter than 400 tokens take even on a fast CPU.
            collect(self.stub.Generate(greedy("Once upon a time", 400, ignore_eos=True),
                                       timeout=0.0005))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertTrue(self.wait_idle())

    def test_malformed_input(self):
        SP = generate_pb2.SamplingParams
        cases = {
            "input": generate_pb2.GenerateRequest(),
            "text": generate_pb2.GenerateRequest(text=""),
            "token_ids[1]": generate_pb2.GenerateRequest(
                token_ids=generate_pb2.TokenIds(ids=[1, 10**6])),
            "max_model_len": generate_pb2.GenerateRequest(
                token_ids=generate_pb2.TokenIds(ids=[100] * 5000)),
            "sampling_params.temperature": generate_pb2.GenerateRequest(
                text="hi", sampling_params=SP(temperature=-1)),
            "sampling_params.top_p": generate_pb2.GenerateRequest(
                text="hi", sampling_params=SP(top_p=2)),
            "sampling_params.max_tokens": generate_pb2.GenerateRequest(
                text="hi", sampling_params=SP(max_tokens=0)),
            "sampling_params.stop_token_ids[0]": generate_pb2.GenerateRequest(
                text="hi", sampling_params=SP(stop_token_ids=[-1])),
            "policy.max_dropped_mass": generate_pb2.GenerateRequest(
                text="hi", policy=generate_pb2.SparsityPolicy(max_dropped_mass=7)),
        }
        for field, request in cases.items():
            with self.assertRaises(grpc.RpcError, msg=field) as caught:
                collect(self.stub.Generate(request, timeout=10))
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, field)
            self.assertIn(field, caught.exception.details())
        # Still serving.
        ok = collect(self.stub.Generate(greedy("Once upon a time", 4), timeout=30))
        self.assertIn(ok["finish_reason"], ("length", "stop"))

    def test_health(self):
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        for service in ("", "lychee.v1.LycheeService"):
            response = check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            self.assertEqual(response.status, health_pb2.HealthCheckResponse.SERVING, service)

    def test_info(self):
        model = self.stub.GetModelInfo(generate_pb2.GetModelInfoRequest(), timeout=5)
        self.assertEqual(model.vocab_size, 512)
        server = self.stub.GetServerInfo(generate_pb2.GetServerInfoRequest(), timeout=5)
        self.assertFalse(server.is_draining)
        self.assertIn("prhs", server.policies)
        self.assertTrue(server.default_policy.HasField("budget_tokens"))
        self.assertAlmostEqual(server.default_policy.prhs.tau, 0.8)

    def test_sparse_policy_report(self):
        prompt = "Once upon a time, there was a little girl named Lily." + \
            " She liked to play in the park with her friend Tom." * 12
        request = greedy(prompt, 8)
        request.policy.CopyFrom(generate_pb2.SparsityPolicy(
            name="prhs", budget_tokens=32, audit_rate=1.0,
            prhs=generate_pb2.PrhsOptions(tau=0.8, dilation=1)))
        complete = None
        for r in self.stub.Generate(request, timeout=60):
            if r.WhichOneof("response") == "complete":
                complete = r.complete
        self.assertIsNotNone(complete)
        self.assertTrue(complete.HasField("policy_report"))
        report = complete.policy_report
        self.assertEqual(report.policy, "prhs")
        self.assertGreater(report.audited_steps, 0)
        self.assertTrue(0.0 <= report.max_exact <= report.max_bound <= 1.0, report)
        self.assertTrue(0.0 < report.kv_read_fraction <= 1.0, report)
        dense = None
        for r in self.stub.Generate(greedy("Once upon a time", 4), timeout=60):
            if r.WhichOneof("response") == "complete":
                dense = r.complete
        self.assertFalse(dense.HasField("policy_report"))


def _make_pki(directory):
    """A throwaway CA and a server certificate for 127.0.0.1/localhost (openssl CLI)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=lychee-test-ca")
    run("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    return {name: os.path.join(directory, name) for name in ("ca.pem", "server.pem", "server.key")}


class GrpcPythonCredentialsTest(unittest.TestCase):
    """grpcio with real credentials: TLS channel credentials plus the API key as a bearer token
    (access_token_call_credentials sends `authorization: Bearer <key>`)."""

    KEY = "sk-python-test"

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.tmp = tempfile.TemporaryDirectory()
        cls.pki = _make_pki(cls.tmp.name)
        cls.server = _Server(["--api-key", cls.KEY, "--tls-cert", cls.pki["server.pem"],
                              "--tls-key", cls.pki["server.key"]])
        cls.address = f"127.0.0.1:{cls.server.port}"
        with open(cls.pki["ca.pem"], "rb") as f:
            cls.tls = grpc.ssl_channel_credentials(root_certificates=f.read())

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.tmp.cleanup()

    def channel(self, key=None):
        creds = self.tls
        if key is not None:
            creds = grpc.composite_channel_credentials(
                self.tls, grpc.access_token_call_credentials(key))
        return grpc.secure_channel(self.address, creds,
                                   options=[("grpc.ssl_target_name_override", "localhost")])

    def test_key_over_tls(self):
        with self.channel(self.KEY) as channel:
            stub = generate_pb2_grpc.LycheeServiceStub(channel)
            out = collect(stub.Generate(greedy("Once upon a time", 4), timeout=30))
            self.assertEqual(out["completion_tokens"], 4)
            self.assertEqual(out["finish_reason"], "length")

    def test_missing_or_wrong_key_is_unauthenticated(self):
        for key in (None, "sk-wrong"):
            with self.subTest(key=key), self.channel(key) as channel:
                stub = generate_pb2_grpc.LycheeServiceStub(channel)
                with self.assertRaises(grpc.RpcError) as caught:
                    stub.GetLoads(generate_pb2.GetLoadsRequest(), timeout=10)
                self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                # grpc.health.v1 stays open for probes.
                check = channel.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString)
                self.assertEqual(check(health_pb2.HealthCheckRequest(), timeout=10).status,
                                 health_pb2.HealthCheckResponse.SERVING)

    def test_plaintext_channel_is_refused(self):
        with grpc.insecure_channel(self.address) as channel:
            stub = generate_pb2_grpc.LycheeServiceStub(channel)
            with self.assertRaises(grpc.RpcError) as caught:
                stub.GetLoads(generate_pb2.GetLoadsRequest(), timeout=5)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main()
