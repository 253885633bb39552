"""What the deployment tests serve and deploy: an HTTP server on 127.0.0.1, bundles, archives good and bad.

Helpers for tests/agent/control/deploy/ and tests/converter/test_archive.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from agent.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, MANIFEST_NAME, MODEL_FILE_NAMES, describe_file

NAMES = {0: "circle", 1: "square", 2: "triangle", 3: "star"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- an HTTP server ---------------------------------------------------------------------------------


@dataclass
class Route:
    """What one path answers. gate: the first half of the body goes out, the rest once the gate is set.

    stall_s: a pause between the headers and the body; drip_s: a pause between chunks of `chunk` bytes.
    content_length: send the header (without it the body ends when the connection closes); declared_length:
    the length it announces, when not the body's.
    """

    body: bytes = b""
    status: int = 200
    content_length: bool = True
    gate: threading.Event | None = None
    stall_s: float = 0.0
    drip_s: float = 0.0
    chunk: int = 64 * 1024
    location: str | None = None
    declared_length: int | None = None


@dataclass
class HttpFiles:
    """A ThreadingHTTPServer on 127.0.0.1 serving `routes`; counts the requests per path."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    authorization: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        files = self
        self._stopping = threading.Event()
        stopping = self._stopping

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the connection closes after each answer: a body without a length ends
            timeout = 30.0

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                files.requests[self.path] = files.requests.get(self.path, 0) + 1
                files.authorization[self.path] = self.headers.get("Authorization")
                route = files.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(route.status)
                if route.location is not None:
                    self.send_header("Location", route.location)
                if route.content_length:
                    length = len(route.body) if route.declared_length is None else route.declared_length
                    self.send_header("Content-Length", str(length))
                self.send_header("Content-Type", "application/gzip")
                self.end_headers()
                try:
                    self.wfile.flush()
                    if route.stall_s:
                        stopping.wait(route.stall_s)
                    body = route.body
                    if route.gate is not None:
                        half = len(body) // 2
                        self.wfile.write(body[:half])
                        self.wfile.flush()
                        route.gate.wait(30)
                        body = body[half:]
                    for start in range(0, len(body), route.chunk):
                        self.wfile.write(body[start : start + route.chunk])
                        if route.drip_s:
                            self.wfile.flush()
                            if stopping.wait(route.drip_s):
                                return
                except OSError:
                    pass  # the client went away (a refused download does)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def add(self, path: str, route: Route | bytes) -> str:
        """Serve `route` at `path`; return its URL."""
        self.routes[path] = route if isinstance(route, Route) else Route(route)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def stop(self) -> None:
        self._stopping.set()
        for route in self.routes.values():
            if route.gate is not None:
                route.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


# -- bundles and archives -----------------------------------------------------------------------------


def write_bundle(
    root: Path,
    model: Path,
    imgsz: tuple[int, int] = (320, 320),
    name: str = "garbage",
    head: str = "classic",
    names: dict[int, str] = NAMES,
) -> Path:
    """A bundle directory around one FP32 ONNX file, with a manifest that matches it byte for byte."""
    root.mkdir(parents=True)
    shutil.copyfile(model, root / MODEL_FILE_NAMES["fp32"])
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "model_name": name,
        "files": {"fp32": describe_file(root, MODEL_FILE_NAMES["fp32"])},
        "names": {str(k): v for k, v in names.items()},
        "imgsz": list(imgsz),
        "head": head,
        "preprocess": {"letterbox": True, "pad_value": 114, "rgb": True, "scale": 1 / 255},
        "deployable": False,
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


def renamed_copy(bundle: Path, dest: Path, model_name: str) -> Path:
    """A copy of `bundle` under another model name (same models, so it verifies; a different archive sha256)."""
    shutil.copytree(bundle, dest)
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    manifest["model_name"] = model_name
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return dest


def reshape_model(
    path: Path, input_hw: tuple[int, int] = (320, 320), output_shape: tuple[int, ...] = (1, 96, 3200), nan: bool = False
) -> Path:
    """An ONNX model that only reshapes its (1, 3, H, W) input: it loads and runs, and its output is garbage.

    output_shape must hold 3 * H * W values; nan: every output is NaN (the input goes through sqrt(-1 - x)).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    height, width = input_hw
    assert int(np.prod(output_shape)) == 3 * height * width, "a reshape keeps the number of values"
    nodes = []
    source = "images"
    initializers = [numpy_helper.from_array(np.array(output_shape, np.int64), "shape")]
    if nan:
        initializers.append(numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"))
        nodes += [
            helper.make_node("Sub", ["minus_one", "images"], ["below_zero"]),
            helper.make_node("Sqrt", ["below_zero"], ["nans"]),
        ]
        source = "nans"
    nodes.append(helper.make_node("Reshape", [source, "shape"], ["output0"]))
    graph = helper.make_graph(
        nodes,
        "garbage",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output_shape))],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what every onnxruntime this project supports reads
    onnx.save(model, str(path))
    return path


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, **attributes: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attributes.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def tar_gz(members: list[tuple[str, bytes | tarfile.TarInfo]], format: int = tarfile.PAX_FORMAT) -> bytes:
    """A .tar.gz of (name, file contents) and ready-made TarInfo entries (links, devices, ...).

    format: tarfile.PAX_FORMAT writes a long name as a pax header, GNU_FORMAT as a GNU long name.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=format) as tar:
        for name, item in members:
            if isinstance(item, tarfile.TarInfo):
                item.name = name
                tar.addfile(item)
            else:
                _add_bytes(tar, name, item)
    return buffer.getvalue()


def huge_header_tar_gz(kind: bytes, size: int) -> bytes:
    """A .tar.gz whose manifest.json comes after an extended header of `size` bytes, all there, of one letter.

    kind: tarfile.XHDTYPE (a pax header: one `path` record) or tarfile.GNUTYPE_LONGNAME. Streamed
    through the compressor, so a 32 MB header costs a 32 KB archive and no 32 MB buffer here.
    """
    header = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    header.type, header.size = kind, size
    member = tarfile.TarInfo("manifest.json")
    member.size = 2
    compressor = zlib.compressobj(wbits=31)  # 31: the gzip format
    parts = [compressor.compress(header.tobuf(format=tarfile.USTAR_FORMAT))]
    record = b"%d path=" % size if kind == tarfile.XHDTYPE else b""
    parts.append(compressor.compress(record))
    letters = b"a" * (1 << 20)
    for start in range(len(record), size, len(letters)):
        parts.append(compressor.compress(letters[: size - start]))
    parts.append(compressor.compress(bytes(-size % tarfile.BLOCKSIZE)))
    parts.append(compressor.compress(member.tobuf(format=tarfile.USTAR_FORMAT) + b"{}".ljust(tarfile.BLOCKSIZE, b"\0")))
    parts.append(compressor.compress(bytes(2 * tarfile.BLOCKSIZE)) + compressor.flush())
    return b"".join(parts)


def bundle_members(bundle: Path, top: str | None = "shapes") -> list[tuple[str, bytes | tarfile.TarInfo]]:
    """The files of `bundle` as archive members, under `top/` (None: at the top of the archive)."""
    prefix = f"{top}/" if top else ""
    return [(prefix + path.name, path.read_bytes()) for path in sorted(bundle.iterdir()) if path.is_file()]


def link(kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo("link")
    info.type, info.linkname = kind, target
    return info


def special(kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo("special")
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info


def wait_until(what: str, predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
