"""Load on loopback: the bot (`steward serve` on SQLite) against a bare aiohttp + wechatpy echo, same run.

    python bench/gateway.py [--seconds 5] [--senders 50] [--safe]

Starts, each in its own process so client and server do not share a core:
  (a) the baseline: this file with --baseline-server (signature check, parse, text reply; nothing else);
  (b) the bot, a bare reply (a message outside any flow that gets the short hint);
  (c) the bot, a stateful menu step: each sender (its own openid) sends 菜单 then 1, over and over.
Prints messages/s and p50/p99 latency per scenario, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent
sys.path.insert(0, str(REPO))

TOKEN = "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx0000000000000000"
TARGET_RATIO, TARGET_P99_MS = 0.5, 50.0


# -- the baseline server ------------------------------------------------------------------------------------


def run_baseline_server(port: int, safe: bool) -> None:
    """The least a WeChat bot can do: check the signature, parse, reply with text (encrypted in safe mode)."""
    from aiohttp import web
    from wechatpy import parse_message
    from wechatpy.crypto import WeChatCrypto
    from wechatpy.exceptions import InvalidSignatureException
    from wechatpy.replies import TextReply
    from wechatpy.utils import check_signature

    crypto = WeChatCrypto(TOKEN, AES_KEY, APPID) if safe else None

    async def wechat(request: web.Request) -> web.Response:
        q = request.query
        try:
            check_signature(TOKEN, q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", ""))
        except InvalidSignatureException:
            return web.Response(status=403)
        body = await request.read()
        if crypto is not None:
            body = crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"])
        msg = parse_message(body)
        xml = TextReply(content="收到：" + getattr(msg, "content", ""), message=msg).render()
        if crypto is not None:
            xml = crypto.encrypt_message(xml, q["nonce"], q["timestamp"])
        return web.Response(text=xml, content_type="application/xml")

    app = web.Application()
    app.add_routes([web.post("/wechat", wechat), web.get("/healthz", lambda _r: web.json_response({"ok": True}))])
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the load generator ----------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    latencies: list[float]
    seconds: float
    errors: int
    sample: str

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def drive(name: str, url: str, texts: list[str], senders: int, seconds: float, safe: bool, tag: str) -> Result:
    """`senders` concurrent residents, each sending `texts` in a loop for `seconds`."""
    import aiohttp

    from bot.config import Settings
    from bot.simulator import Phone, message_xml

    settings = Settings(wechat_token=TOKEN, wechat_aes_key=AES_KEY if safe else None)
    connector = aiohttp.TCPConnector(limit=senders, limit_per_host=senders)
    latencies: list[float] = []
    errors = 0
    sample = ""
    msg_ids = iter(range(10**15 + int(time.time() * 1000) % 10**9 * 1000, 10**18))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        phone = Phone(url, settings, session)
        query = phone.signed_query()  # one fresh signature serves the whole run (the timestamp stays in range)

        async def sender(i: int, until: float) -> None:
            nonlocal errors, sample
            openid = f"o_bench_{tag}_{i:03d}"
            step = 0
            while time.monotonic() < until:
                xml = message_xml(openid, "text", {"Content": texts[step % len(texts)], "MsgId": next(msg_ids)})
                started = time.perf_counter()
                try:
                    answer = await phone.post_xml(xml, query)
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                elapsed = time.perf_counter() - started
                if answer.status != 200 or not answer.text:
                    errors += 1
                else:
                    latencies.append(elapsed)
                    if i == 0 and step < len(texts):
                        sample += f"\n      {texts[step % len(texts)]!r} → {answer.text.splitlines()[0][:40]!r}"
                step += 1

        # Warm up (connections, first contact creates each resident), then measure.
        await asyncio.gather(*(sender(i, time.monotonic() + 0.5) for i in range(senders)))
        latencies.clear()
        errors = 0
        sample = ""
        started = time.monotonic()
        await asyncio.gather(*(sender(i, started + seconds) for i in range(senders)))
        took = time.monotonic() - started
    return Result(name, latencies, took, errors, sample)


# -- orchestration ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not become healthy")


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], cwd: str):
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pin(core: int | None) -> list[str]:
    """taskset prefix so the server keeps one core and the client the other (when taskset exists)."""
    if core is None or not Path("/usr/bin/taskset").exists() or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(core)]


async def bench(args: argparse.Namespace) -> list[Result]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    base_env["PYTHONPATH"] = str(REPO) + os.pathsep + base_env.get("PYTHONPATH", "")
    results: list[Result] = []
    modes = [False, True] if args.safe else [False]
    with tempfile.TemporaryDirectory(prefix="steward-bench-") as tmp:
        if pin(1):
            os.sched_setaffinity(0, {0})  # the client on core 0, servers on core 1
        for safe in modes:
            label = "safe" if safe else "plain"
            port = free_port()
            cmd = [*pin(1), sys.executable, str(THIS), "--baseline-server", "--port", str(port)]
            with server([*cmd, *(["--safe"] if safe else [])], base_env, tmp) as proc:
                url = f"http://127.0.0.1:{port}"
                await wait_healthy(url, proc)
                results.append(await drive(f"(a) baseline echo, {label}", url, ["你好"], args.senders,
                                           args.seconds, safe, "a"))
            port = free_port()
            env = {
                **base_env,
                "STEWARD_PORT": str(port),
                "STEWARD_WECHAT_TOKEN": TOKEN,
                "STEWARD_DATABASE_URL": f"sqlite:///{tmp}/bench-{label}.db",
                "STEWARD_WECHAT_API_BASE": "http://127.0.0.1:9",  # nothing is pushed in these scenarios
            }
            if safe:
                env["STEWARD_WECHAT_AES_KEY"] = AES_KEY
            with server([*pin(1), sys.executable, "-m", "bot.cli", "serve"], env, tmp) as proc:
                url = f"http://127.0.0.1:{port}"
                await wait_healthy(url, proc)
                results.append(await drive(f"(b) bot bare reply, {label}", url, [args.bare_text], args.senders,
                                           args.seconds, safe, f"b{label}"))
                results.append(await drive(f"(c) bot menu step, {label}", url, ["菜单", "1"], args.senders,
                                           args.seconds, safe, f"c{label}"))
    return results


def report(results: list[Result], senders: int) -> None:
    print(f"\n{senders} concurrent senders on loopback; latency measured at the client.\n")
    head = f"{'scenario':34} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs baseline':>12}"
    print(head)
    print("-" * len(head))
    baseline = None
    for r in results:
        if r.name.startswith("(a)"):
            baseline = r
        ratio = f"{r.rate / baseline.rate:.2f}×" if baseline else "-"
        print(f"{r.name:34} {r.rate:9.0f} {r.pct(0.50):8.2f} {r.pct(0.99):8.2f} {r.errors:7d} {ratio:>12}")
    print("\nwhat each scenario got back (first sender):")
    for r in results:
        print(f"  {r.name}:{r.sample}")
    verdicts = []
    baseline = None
    for r in results:
        if r.name.startswith("(a)"):
            baseline = r
        if r.name.startswith("(c)") and baseline:
            ok = r.rate >= TARGET_RATIO * baseline.rate and r.pct(0.99) < TARGET_P99_MS
            verdicts.append(
                f"{r.name}: {r.rate / baseline.rate:.2f}× baseline, p99 {r.pct(0.99):.1f} ms → "
                f"{'meets' if ok else 'MISSES'} the target (≥ {TARGET_RATIO}×, p99 < {TARGET_P99_MS:.0f} ms)"
            )
    print("\n" + "\n".join(verdicts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario (default 5)")
    parser.add_argument("--senders", type=int, default=50, help="concurrent senders (default 50)")
    parser.add_argument("--safe", action="store_true", help="also run every scenario in safe (AES) mode")
    parser.add_argument("--bare-text", default="嗯", help="the message for (b), answered outside any flow")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(args.port, args.safe)
        return
    results = asyncio.run(bench(args))
    report(results, args.senders)


if __name__ == "__main__":
    main()
