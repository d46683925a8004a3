"""A client of a running ComfyUI server's own HTTP and websocket API, on the standard library alone.

What ``learn-library`` needs: upload a file into the server's input folder, queue an
API-format prompt, follow its progress on the websocket, read its history, and download a
file from its output folder. Every network failure is a :class:`ServerGone` (the server
is down or unreachable: its job goes to another server); a prompt the server rejects or
that fails while running is a :class:`JobFailed` (the clip or the workflow is at fault).
"""
from __future__ import annotations

import base64
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Callable, Optional

TIMEOUT = 30.0
PACK = "MotionInversion_"        # this pack's node-ID prefix (nodes/common.py's NODE_PREFIX)


def prompt_node(prompt: dict, class_type: str) -> dict:
    """The one node of ``class_type`` in an API-format prompt ``{id: {"class_type", "inputs"}}``."""
    found = [node for node in prompt.values() if node["class_type"] == class_type]
    if len(found) != 1:
        raise ValueError(f"the workflow needs exactly one {class_type} node, has {len(found)}")
    return found[0]


class ServerGone(Exception):
    """The server did not answer (refused, reset, timed out)."""


class JobFailed(Exception):
    """The server answered, and refused or failed the job; the message says why."""


class ComfyServer:
    """One ComfyUI server at ``url`` (``http://host:port``), with a client id of its own."""

    def __init__(self, url: str, timeout: float = TIMEOUT):
        parsed = urllib.parse.urlparse(url if "://" in url else "http://" + url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"server {url!r}: give it as http://host:port")
        self.url = f"http://{parsed.hostname}:{parsed.port or 80}"
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def __repr__(self) -> str:
        return self.url

    # ---- HTTP ----------------------------------------------------------------------------
    def _request(self, path: str, body: Optional[bytes] = None, headers: Optional[dict] = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:2000]
            raise JobFailed(f"{self.url}{path}: HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise ServerGone(f"{self.url} did not answer: {error}") from None

    def get_json(self, path: str):
        return json.loads(self._request(path))

    def alive(self) -> bool:
        try:
            self.get_json("/system_stats")
            return True
        except (ServerGone, JobFailed, ValueError):
            return False

    def upload(self, path: str, name: str) -> str:
        """``path`` into the server's input folder as ``name`` (overwriting); the name the server gives it."""
        boundary = uuid.uuid4().hex
        with open(path, "rb") as handle:
            content = handle.read()
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
                 (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n",
                 f"--{boundary}--\r\n".encode()]
        answer = json.loads(self._request("/upload/image", b"".join(parts),
                                          {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return answer["name"] if not answer.get("subfolder") else f"{answer['subfolder']}/{answer['name']}"

    def queue(self, prompt: dict) -> str:
        """Queue an API-format ``prompt``; its prompt id. A prompt the server refuses raises :class:`JobFailed`
        with the server's reasons (each node's errors)."""
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        answer = json.loads(self._request("/prompt", body, {"Content-Type": "application/json"}))
        if "prompt_id" not in answer:
            raise JobFailed(f"{self.url} refused the prompt: {json.dumps(answer)[:2000]}")
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> Optional[dict]:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def download(self, folder_type: str, relative: str) -> bytes:
        """A file of the server's ``folder_type`` folder (output, input, temp) by its path inside it."""
        subfolder, filename = os.path.split(relative)
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        return self._request(f"/view?{query}")

    # ---- websocket ---------------------------------------------------------------------------
    def follow(self, prompt_id: str, on_progress: Callable[[int, int], None], poll: float = 2.0) -> dict:
        """Wait until ``prompt_id`` ends; calls ``on_progress(value, max)`` on each of its progress messages.
        Its history entry when it succeeded; :class:`JobFailed` with the server's error when it failed."""
        with _WebSocket(self.host, self.port, f"/ws?clientId={self.client_id}", self.timeout) as websocket:
            while True:
                entry = self.history(prompt_id)
                if entry is not None and entry.get("status", {}).get("completed") is not None:
                    return _finished(entry, prompt_id)
                message = websocket.receive(poll)
                if message is None:
                    continue
                kind, data = message.get("type"), message.get("data") or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if kind == "progress":
                    on_progress(int(data.get("value", 0)), int(data.get("max", 0)))
                elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                    entry = self.history(prompt_id)
                    if entry is None and kind != "execution_success":
                        raise JobFailed(f"{kind} on {self.url}: {json.dumps(data)[:2000]}")
                    if entry is not None:
                        return _finished(entry, prompt_id)


def _finished(entry: dict, prompt_id: str) -> dict:
    status = entry.get("status", {})
    if status.get("status_str") not in (None, "success") or status.get("completed") is False:
        errors = [message for message in status.get("messages", []) if message[0] in ("execution_error",
                                                                                       "execution_interrupted")]
        detail = errors[-1][1] if errors else status
        if isinstance(detail, dict):
            detail = f"{detail.get('node_type', '?')}: {detail.get('exception_message', detail)}"
        raise JobFailed(f"prompt {prompt_id} failed: {str(detail).strip()[:2000]}")
    return entry


class _WebSocket:
    """The client side of RFC 6455 for ComfyUI's ``/ws``: text messages in, pongs out; binary messages (previews)
    skipped."""

    def __init__(self, host: str, port: int, path: str, timeout: float):
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self.sock: Optional[socket.socket] = None
        self.buffer = b""

    def __enter__(self) -> "_WebSocket":
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            key = base64.b64encode(os.urandom(16)).decode()
            self.sock.sendall((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            while b"\r\n\r\n" not in self.buffer:
                self.buffer += self._recv()
        except OSError as error:
            raise ServerGone(f"{self.host}:{self.port} websocket: {error}") from None
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ServerGone(f"{self.host}:{self.port} refused the websocket: {head[:200]!r}")
        return self

    def __exit__(self, *exc) -> None:
        if self.sock is not None:
            self.sock.close()

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ServerGone(f"{self.host}:{self.port} closed the websocket")
        return chunk

    def _frame(self) -> Optional[tuple[int, bytes]]:
        """One whole frame ``(opcode, payload)`` taken from the buffer, or None while it is incomplete (a read that
        times out mid-frame loses nothing)."""
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        opcode, length, position = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if length in (126, 127):
            size = 2 if length == 126 else 8
            if len(buffer) < 2 + size:
                return None
            length = int.from_bytes(buffer[2:2 + size], "big")
            position += size
        mask = None
        if buffer[1] & 0x80:
            mask, position = buffer[position:position + 4], position + 4
        if len(buffer) < position + length:
            return None
        payload, self.buffer = buffer[position:position + length], buffer[position + length:]
        if mask:
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        return opcode, payload

    def receive(self, wait: float) -> Optional[dict]:
        """The next text message as JSON, or None after ``wait`` seconds without one."""
        self.sock.settimeout(wait)
        try:
            while True:
                frame = self._frame()
                if frame is None:
                    self.buffer += self._recv()
                    continue
                opcode, payload = frame
                if opcode == 0x8:
                    raise ServerGone(f"{self.host}:{self.port} closed the websocket")
                if opcode == 0x9:
                    self._send(0xA, payload)
                elif opcode == 0x1:
                    return json.loads(payload.decode("utf-8"))
        except socket.timeout:
            return None
        except OSError as error:
            raise ServerGone(f"{self.host}:{self.port} websocket: {error}") from None
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode, 0x80 | len(payload)])       # control frames are short
        self.sock.sendall(header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload)))
