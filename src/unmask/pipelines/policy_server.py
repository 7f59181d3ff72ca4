"""Policy server and client over websocket + msgpack, following openpi's client protocol where practical: on
connect the server sends its metadata; then each client message is an observation dict and each reply an action
dict (``{"actions": [H, D], "server_timing": {...}}``) or ``{"error": message}`` for an observation the policy
cannot use (the connection stays open). NumPy arrays travel as msgpack maps (``__ndarray__``, dtype, shape, data).

Observation keys: ``state`` (``[S]``), optional ``prefix_actions`` (``[d, D]``, inpainting) and ``steps``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack
import numpy as np

from ..modalities.action.model import ActionPolicy, ObservationError


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": True, "dtype": obj.dtype.str, "shape": list(obj.shape), "data": obj.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__} to the policy server")


def _unpack_hook(obj: dict) -> Any:
    if obj.get("__ndarray__"):
        return np.frombuffer(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    return obj


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_pack_default)


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, object_hook=_unpack_hook)


class PolicyServer:
    """Serves one ``ActionPolicy`` to any number of clients (one thread per connection).

    ``delay_ms`` is added before every reply (simulating a slower model or link); it may be changed while serving."""

    def __init__(self, policy: ActionPolicy, host: str = "127.0.0.1", port: int = 8765, delay_ms: float = 0.0) -> None:
        self.policy, self.host, self.port, self.delay_ms = policy, host, port, delay_ms
        self._server = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one decode at a time: torch on 2 cores gains nothing from overlap

    @property
    def metadata(self) -> dict:
        s = self.policy.spec
        return {"policy": "unmask_dvla", "state_dim": s.state_dim, "action_dim": s.action_dim, "horizon": s.horizon,
                "decode_steps": s.decode_steps}

    def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        ws.send(packb(self.metadata))
        while True:
            try:
                msg = unpackb(ws.recv())
            except ConnectionClosed:
                return
            t0 = time.perf_counter()
            try:
                if not isinstance(msg, dict) or "state" not in msg:
                    raise ObservationError("observation has no 'state'; send {'state': [S floats], ...}")
                prefix = msg.get("prefix_actions")
                with self._lock:
                    actions, info = self.policy.predict_chunk(
                        msg["state"], prefix_actions=None if prefix is None else np.asarray(prefix)[None],
                        steps=msg.get("steps"))
                reply = {"actions": actions[0].numpy().astype(np.float32),
                         "server_timing": {"infer_ms": (time.perf_counter() - t0) * 1000, "nfe": info["nfe"]}}
            except ValueError as err:  # ObservationError included: name the problem, keep the connection
                reply = {"error": str(err)}
            if self.delay_ms:
                time.sleep(self.delay_ms / 1000)
            try:
                ws.send(packb(reply))
            except ConnectionClosed:
                return

    def start(self) -> PolicyServer:
        """Serve in a background thread (returns once the socket is listening)."""
        from websockets.sync.server import serve

        self._server = serve(self._handle, self.host, self.port, compression=None, max_size=2**24)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.start()
        self._thread.join()

    def stop(self) -> None:
        """Close the socket and every connection (clients see a disconnect)."""
        if self._server is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._server = None


class PolicyClient:
    """Robot-side connection: ``infer(obs) -> {"actions": [H, D], ...}``; raises ``ConnectionError`` when the server
    is gone, ``TimeoutError`` when it stalls past ``timeout_s``, ``ValueError`` for an observation it refused."""

    def __init__(self, uri: str = "ws://127.0.0.1:8765", timeout_s: float = 1.0) -> None:
        self.uri, self.timeout_s = uri, timeout_s
        self._ws = None
        self.metadata: dict | None = None

    def connect(self) -> dict:
        from websockets.sync.client import connect

        self.close()
        try:
            self._ws = connect(self.uri, compression=None, max_size=2**24, open_timeout=self.timeout_s, legacy=True)
            self.metadata = unpackb(self._ws.recv(timeout=self.timeout_s))
        except (OSError, TimeoutError) as err:
            self._ws = None
            raise ConnectionError(f"policy server at {self.uri} unreachable: {err}; start it with "
                                  f"`unmask robot serve`") from err
        return self.metadata

    def infer(self, obs: dict) -> dict:
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            self.connect()
        try:
            self._ws.send(packb(obs))
            reply = unpackb(self._ws.recv(timeout=self.timeout_s))
        except TimeoutError:
            self.close()  # a late reply must not be read as the answer to the next request
            raise TimeoutError(f"policy server at {self.uri} gave no reply within {self.timeout_s} s") from None
        except (ConnectionClosed, OSError) as err:
            self.close()
            raise ConnectionError(f"policy server at {self.uri} disconnected: {err}") from err
        if "error" in reply:
            raise ValueError(reply["error"])
        return reply

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - closing a dead socket may fail in several ways; it is gone either way
                pass
            self._ws = None
