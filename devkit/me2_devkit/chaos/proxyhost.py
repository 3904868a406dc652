"""Several fault proxies in a child process, driven over its stdin and stdout.

A chaos run relays every byte the service exchanges with MariaDB, Redis,
Action and etcd. Relayed in the runner's own process, that traffic would
compete for one interpreter lock with the runner's journal and scrapes (and
slow both), so the proxies run in a child of their own, all on one asyncio
loop, and the runner sends it one JSON line per command:

- start: ``python -m me2_devkit.chaos.proxyhost [--seed N] NAME=HOST:PORT...``;
  the child prints ``{"listening": {NAME: "127.0.0.1:PORT", ...}}`` once.
- ``{"op": "phase", "name": NAME, "phase": PHASE, "delay_ms": .., "spread_ms": ..}``
  answers ``{"ok": true}`` once the phase applies;
- ``{"op": "stats", "name": NAME}`` answers ``{"ok": true, "stats": {...}}``;
- a bad command answers ``{"error": "<one sentence>"}``;
- the end of stdin closes every proxy and ends the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from me2_devkit.chaos.faultproxy import FaultProxy, Phase, ProxyError

START_TIMEOUT_S = 20.0


def _parse_targets(args: list[str]) -> tuple[dict[str, str], int]:
    """``NAME=HOST:PORT`` arguments (and ``--seed N``) as a mapping and a seed."""
    targets, seed, rest = {}, 0, list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--seed" and rest:
            seed = int(rest.pop(0))
            continue
        name, sep, target = arg.partition("=")
        if not sep or not name:
            raise ProxyError(f"{arg!r} is not NAME=HOST:PORT")
        targets[name] = target
    return targets, seed


async def _serve(targets: dict[str, str], seed: int) -> None:
    proxies = {
        name: await FaultProxy(target, seed=seed + i).start()
        for i, (name, target) in enumerate(targets.items())
    }
    _answer({"listening": {name: proxy.address for name, proxy in proxies.items()}})
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            _answer(_command(proxies, line))
    finally:
        for proxy in proxies.values():
            await proxy.close()


def _command(proxies: dict[str, FaultProxy], line: str) -> dict[str, Any]:
    """Carry out one command line; the answer to print."""
    try:
        command = json.loads(line)
        proxy = proxies.get(command.get("name", ""))
        if proxy is None:
            raise ProxyError(f"no proxy named {command.get('name')!r}")
        if command.get("op") == "phase":
            delay_ms, spread_ms = command.get("delay_ms", 0.0), command.get("spread_ms", 0.0)
            proxy.apply(Phase(command["phase"], delay_ms, spread_ms))
            return {"ok": True}
        if command.get("op") == "stats":
            return {"ok": True, "stats": asdict(proxy.stats)}
        raise ProxyError(f"unknown command {command.get('op')!r}")
    except (ProxyError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {"error": str(exc)}


def _answer(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    """The child's entry point; exit 2 for bad arguments, 1 when a proxy cannot listen."""
    try:
        targets, seed = _parse_targets(argv)
    except (ProxyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(targets, seed))
    except ProxyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


class ProxyHost:
    """Starts the child for ``targets`` (name -> host:port) and talks to it (thread-safe)."""

    def __init__(self, targets: dict[str, str], *, seed: int = 0, log_path: Path | None = None):
        self.targets = dict(targets)
        self.seed = seed
        self.log_path = log_path
        self.addresses: dict[str, str] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self) -> ProxyHost:
        """Start the child and wait for its listening line. Raises ProxyError."""
        argv = [sys.executable, "-m", "me2_devkit.chaos.proxyhost", "--seed", str(self.seed)]
        argv += [f"{name}={target}" for name, target in self.targets.items()]
        log: IO[bytes] | int = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        finally:
            if not isinstance(log, int):
                log.close()
        pump = threading.Thread(
            target=self._pump_lines, args=(self._proc.stdout,), name="proxy-host-lines", daemon=True
        )
        pump.start()
        first = self._read(START_TIMEOUT_S)
        if "listening" not in first:
            self.stop()
            raise ProxyError(f"the proxy host did not start: {first}")
        self.addresses = dict(first["listening"])
        return self

    def set_phase(
        self, name: str, phase: str, delay_ms: float = 0.0, spread_ms: float = 0.0
    ) -> None:
        """Put proxy ``name`` in ``phase``; returns once it applies. Raises ProxyError."""
        command = {"op": "phase", "name": name, "phase": phase}
        self._call({**command, "delay_ms": delay_ms, "spread_ms": spread_ms})

    def stats(self, name: str) -> dict[str, int]:
        """Proxy ``name``'s counts (``ProxyStats`` as a mapping). Raises ProxyError."""
        return self._call({"op": "stats", "name": name})["stats"]

    def stop(self) -> None:
        """Close the child's stdin (it closes every proxy and exits); kill it if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _call(self, command: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                raise ProxyError("the proxy host is not running")
            self._proc.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
            self._proc.stdin.flush()  # type: ignore[union-attr]
            answer = self._read(START_TIMEOUT_S)
        if "error" in answer:
            raise ProxyError(answer["error"])
        return answer

    def _read(self, timeout_s: float) -> dict[str, Any]:
        """One answer line; a child that died or went quiet is a ProxyError."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            line = ""
        if not line:
            code = self._proc.poll() if self._proc else None
            raise ProxyError(f"the proxy host gave no answer (exit code {code})")
        return json.loads(line)

    def _pump_lines(self, stdout: IO[str]) -> None:
        """Hand every line the child prints to ``_read`` (one thread, so no line is split)."""
        for line in stdout:
            self._lines.put(line)
        self._lines.put("")

    def __enter__(self) -> ProxyHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
