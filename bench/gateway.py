"""Load on loopback: the bot (`steward serve` on SQLite) against a bare aiohttp + wechatpy echo, same run.

    python bench/gateway.py [--seconds 5] [--senders 50] [--safe] [--client wrk|python]

Starts, each in its own process so client and server do not share a core:
  (a) the baseline: this file with --baseline-server (signature check, parse, text reply; nothing else);
  (b) the bot, a bare reply (a message outside any flow that gets the short hint);
  (c) the bot, a stateful menu step: each sender (its own openid) sends 菜单 then 1, over and over.
Prints messages/s and p50/p99 latency per scenario, and the ratio to the baseline.

The load comes from `wrk` when it is on PATH (--client wrk, the default then): one thread pinned to the client
core, one connection per sender, driven by bench/gateway_wrk.lua (real XML, a unique MsgId per request, each
sender's texts in strict turn). Each request carries its own signature (its own nonce), taken from a pool this
file signs before the run, as WeChat signs every callback: the bot refuses a signature replayed with another
body. Without wrk, or with --client python, an aiohttp client sends instead (signing each message); it
saturates its own core at a few thousand messages/s, so its figures measure the client as much as the server.
Safe mode (AES) always uses the Python client: the Lua in wrk has no AES. Before each timed run one sender
goes through the scenario with the Python client and its replies are checked (and shown); wrk then checks
every reply against them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent
sys.path.insert(0, str(REPO))

TOKEN = "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx0000000000000000"
TARGET_RATIO, TARGET_P99_MS = 0.5, 50.0
WRK_SCRIPT = THIS.parent / "gateway_wrk.lua"


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
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=2048)  # as steward serve


# -- the load generator ----------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    rate: float  # answered messages per second
    p50: float  # ms
    p99: float  # ms
    errors: int  # socket errors, non-200 answers, empty or wrong replies
    sample: str  # what the checking sender got back
    client: str


IDLE_LEAVES = ("concurrent/futures/thread.py:81)", "_connection_worker_thread (aiosqlite/core.py:59)")


def summarise(raw: Path, out: Path, top: int = 40) -> None:
    """py-spy's collapsed stacks → the functions with the most on-CPU samples, own and total (repo code and
    libraries alike), then the raw stacks."""
    own: Counter = Counter()
    total: Counter = Counter()
    samples = 0
    text = raw.read_text() if raw.exists() else ""
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        if stack.endswith(IDLE_LEAVES):
            continue  # a pool thread blocked on its queue: py-spy sees it as running
        samples += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} on-CPU samples"]
    lines += ["", "own:"] + [f"{n / samples:6.1%}  {f}" for f, n in own.most_common(top)] if samples else []
    lines += ["", "total:"] + [f"{n / samples:6.1%}  {f}" for f, n in total.most_common(top)] if samples else []
    out.write_text("\n".join(lines) + "\n\n" + text)


def _pct(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
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

        async def sender(i: int, until: float) -> None:
            nonlocal errors, sample
            openid = f"o_bench_{tag}_{i:03d}"
            step = 0
            while time.monotonic() < until:
                xml = message_xml(openid, "text", {"Content": texts[step % len(texts)], "MsgId": next(msg_ids)})
                started = time.perf_counter()
                try:  # a fresh signature per message, as WeChat sends: the bot refuses one replayed with another body
                    answer = await phone.post_xml(xml, phone.signed_query())
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
    return Result(name, len(latencies) / took, _pct(latencies, 0.5), _pct(latencies, 0.99), errors, sample, "python")


async def check(url: str, texts: list[str], safe: bool, tag: str, echo: bool) -> tuple[str, list[str]]:
    """One sender goes round the scenario twice with the Python client; every reply must be a 200 with text, the
    second round must get what the first got (the loop the load repeats is steady) and the echo must echo.
    Returns what it got back (for the report) and, per text, a snippet every reply under load must contain."""
    import aiohttp

    from bot.config import Settings
    from bot.simulator import Phone

    settings = Settings(wechat_token=TOKEN, wechat_aes_key=AES_KEY if safe else None)
    openid = f"o_check_{tag}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        phone = Phone(url, settings, session)
        rounds = [[await phone.text(openid, text) for text in texts] for _ in range(2)]
    sample = ""
    for text, answer in zip(texts, rounds[0], strict=True):
        sample += f"\n      {text!r} → {answer.text.splitlines()[0][:40] if answer.text else answer.raw[:40]!r}"
    problems = [
        f"{text!r} got HTTP {a.status}, {a.text[:40]!r}"
        for text, a in zip(texts * 2, rounds[0] + rounds[1], strict=True)
        if a.status != 200 or not a.text
    ]
    if not problems and [a.text for a in rounds[0]] != [a.text for a in rounds[1]]:
        problems.append("the second round got other replies than the first: " + repr([a.text[:30] for a in rounds[1]]))
    if echo and not problems and rounds[0][0].text != "收到：" + texts[0]:
        problems.append(f"the echo answered {rounds[0][0].text!r}")
    if problems:
        raise SystemExit(f"{tag}: the scenario does not answer as it should:{sample}\n  " + "\n  ".join(problems))
    return sample, [a.text.splitlines()[0][:30] for a in rounds[0]]


_wrk_runs = iter(range(1, 100))


async def first_contact(url: str, openids: list[str], text: str) -> None:
    """Each of wrk's senders says `text` once (all at once) and gets its answer."""
    import aiohttp

    from bot.config import Settings
    from bot.simulator import Phone

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        phone = Phone(url, Settings(wechat_token=TOKEN), session)
        await asyncio.gather(*(phone.text(openid, text) for openid in openids))


async def drive_wrk(name: str, url: str, texts: list[str], expects: list[str], senders: int, seconds: float, tag: str,
              sample: str) -> Result:
    """`senders` wrk connections, each one sender at a time, for `seconds` (after a 1 s warm-up)."""
    pairs = [item for pair in zip(texts, expects, strict=True) for item in pair]

    def run(duration: int, pool_size: int) -> dict[str, float]:
        prefix = f"9{next(_wrk_runs):05d}"  # MsgId = prefix + thread + counter: unique across this bench's runs
        with tempfile.NamedTemporaryFile("w", prefix="steward-wrk-", suffix=".txt") as pool:
            pool.write(signed_paths(prefix, pool_size))
            pool.flush()
            cmd = ["wrk", "-t1", f"-c{senders}", f"-d{duration}s", "--latency", "--timeout", "10s",
                   "-s", str(WRK_SCRIPT), url + "/wechat", "--", pool.name, tag, prefix, str(senders), *pairs]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        if done.returncode != 0:
            raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        got = parse_wrk(done.stdout)
        if got["exhausted"]:
            raise SystemExit(f"{tag}: wrk sent {got['exhausted']:.0f} requests beyond its {pool_size} signatures; "
                             "a bigger pool is needed")
        return got

    # First contact creates each resident (up to ~2 s for 50 at once on SQLite): do it before wrk's warm-up, or
    # a warm-up cut off mid-creation leaves the timed run's first messages waiting for it (seconds of p99).
    await first_contact(url, [f"o_wrk_{tag}_1_{i:03d}" for i in range(1, senders + 1)], texts[0])
    warm = await asyncio.to_thread(run, 1, 30_000)  # warm-up: connections, caches
    await asyncio.sleep(0.3)
    duration = max(1, round(seconds))
    # One signature per request: room for three times the warm-up's rate (the timed run is usually faster).
    got = await asyncio.to_thread(run, duration, int(max(10_000, 3 * warm["rate"]) * duration) + 1_000)
    errors = int(got["socket_errors"] + got["non2xx"] + got["mismatches"] + got["unrouted"])
    return Result(name, got["rate"], got["p50"], got["p99"], errors, sample, "wrk")


def signed_paths(prefix: str, count: int) -> str:
    """`count` lines of /wechat?timestamp=..&nonce=..&signature=.., one per wrk request, each nonce its own (the
    run's prefix and a counter): WeChat signs every callback afresh, and the bot refuses a signature replayed with
    another body. All share one timestamp, well inside the bot's clock-skew window for a run of seconds."""
    from bot.protocol import sign

    timestamp = str(int(time.time()))
    lines = []
    for i in range(count):
        nonce = f"{prefix}{i:08d}"
        lines.append(f"/wechat?timestamp={timestamp}&nonce={nonce}&signature={sign(TOKEN, timestamp, nonce)}\n")
    return "".join(lines)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, the 50 % and 99 % latency lines (in ms), socket errors, non-2xx answers and the script's counts."""

    def find(pattern: str, default: str | None = None) -> re.Match | None:
        match = re.search(pattern, out, re.MULTILINE)
        if match is None and default is None:
            raise SystemExit(f"cannot read wrk's output ({pattern!r} not found):\n{out}")
        return match

    def latency(q: str) -> float:
        m = find(rf"^\s*{q}%\s+([\d.]+)(us|ms|s|m|h)\s*$")
        return float(m.group(1)) * _UNITS_MS[m.group(2)]

    sockets = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", "")
    non2xx = find(r"Non-2xx or 3xx responses: (\d+)", "")
    script = find(r"steward-bench: mismatches (\d+) unrouted (\d+) extra_senders (\d+) exhausted (\d+)")
    return {
        "rate": float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "socket_errors": sum(int(g) for g in sockets.groups()) if sockets else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "mismatches": int(script.group(1)),
        "unrouted": int(script.group(2)),
        "exhausted": int(script.group(4)),
    }


async def scenario(name: str, url: str, texts: list[str], args: argparse.Namespace, safe: bool, tag: str) -> Result:
    sample, expects = await check(url, texts, safe, tag, echo=name.startswith("(a)"))
    if args.client == "wrk" and not safe:
        return await drive_wrk(name, url, texts, expects, args.senders, args.seconds, tag, sample)
    result = await drive(name, url, texts, args.senders, args.seconds, safe, tag)
    result.sample = sample
    return result


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


async def wait_workers(url: str, workers: int, timeout: float = 60) -> None:
    """Until `workers` processes have answered /healthz, each on a new connection: the bot's first worker listens
    alone while the rest start, and a load whose keep-alive connections were all opened then would go to it
    alone for the whole run (the kernel spreads connections over the listening workers as they connect)."""
    import aiohttp

    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: only {len(seen)} of {workers} workers answered")
        with contextlib.suppress(aiohttp.ClientError):
            async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as r:
                seen.add((await r.json())["worker"])
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], cwd: str, log: Path):
    """The server's stderr goes to `log`, never to a pipe nobody reads: the bot logs a line per message, and once
    a pipe's 64 KiB buffer is full its next log write blocks the whole event loop (the bench then hangs)."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        yield proc
    except BaseException:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        print(f"the server's last log lines ({log}):\n  " + "\n  ".join(tail), file=sys.stderr)
        raise
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
    return ["/usr/bin/taskset", "-c", str(core)]


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
            with server([*cmd, *(["--safe"] if safe else [])], base_env, tmp, Path(tmp, f"a-{label}.log")) as proc:
                url = f"http://127.0.0.1:{port}"
                await wait_healthy(url, proc)
                results.append(await scenario(f"(a) baseline echo, {label}", url, ["你好"], args, safe, f"a{label}"))
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
            bot_cmd = [*pin(1), sys.executable, "-m", "bot.cli", "serve"]
            with server(bot_cmd, env, tmp, Path(tmp, f"bot-{label}.log")) as proc:
                url = f"http://127.0.0.1:{port}"
                await wait_healthy(url, proc)
                results.append(await scenario(f"(b) bot bare reply, {label}", url, [args.bare_text], args, safe,
                                              f"b{label}"))
                spy = None
                if args.profile:
                    spy = await asyncio.create_subprocess_exec(
                        str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(proc.pid), "-f", "raw",
                        "-r", "200", "-d", str(int(args.seconds + 3)), "-o", str(Path(args.profile) / f"c{label}.raw"),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                results.append(await scenario(f"(c) bot menu step, {label}", url, ["菜单", "1"], args, safe,
                                              f"c{label}"))
                if spy is not None:
                    await spy.wait()
                    summarise(Path(args.profile) / f"c{label}.raw", Path(args.profile) / f"c{label}.txt")
    return results


def report(results: list[Result], senders: int, notes: list[str]) -> None:
    print(f"\n{senders} concurrent senders on loopback; latency measured at the client.")
    for note in notes:
        print(note)
    print()
    head = f"{'scenario':34} {'client':>6} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs baseline':>12}"
    print(head)
    print("-" * len(head))
    baseline = None
    for r in results:
        if r.name.startswith("(a)"):
            baseline = r
        ratio = f"{r.rate / baseline.rate:.2f}×" if baseline else "-"
        print(f"{r.name:34} {r.client:>6} {r.rate:9.0f} {r.p50:8.2f} {r.p99:8.2f} {r.errors:7d} {ratio:>12}")
    print("\nwhat each scenario got back (checked with the Python client before the timed run):")
    for r in results:
        print(f"  {r.name}:{r.sample}")
    verdicts = []
    baseline = None
    for r in results:
        if r.name.startswith("(a)"):
            baseline = r
        if r.name.startswith("(c)") and baseline:
            ok = r.rate >= TARGET_RATIO * baseline.rate and r.p99 < TARGET_P99_MS
            verdicts.append(
                f"{r.name}: {r.rate / baseline.rate:.2f}× baseline, p99 {r.p99:.1f} ms → "
                f"{'meets' if ok else 'MISSES'} the target (≥ {TARGET_RATIO}×, p99 < {TARGET_P99_MS:.0f} ms)"
            )
    print("\n" + "\n".join(verdicts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario (default 5)")
    parser.add_argument("--senders", type=int, default=50, help="concurrent senders (default 50)")
    parser.add_argument("--safe", action="store_true", help="also run every scenario in safe (AES) mode")
    parser.add_argument("--client", choices=["wrk", "python"], default=None,
                        help="load generator (default: wrk when it is on PATH, else the Python client)")
    parser.add_argument("--bare-text", default="嗯", help="the message for (b), answered outside any flow")
    parser.add_argument("--profile", help="a folder: py-spy samples of the bot during the menu step")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if args.baseline_server:
        run_baseline_server(args.port, args.safe)
        return
    notes = []
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") else "python"
        if args.client == "python":
            notes.append("wrk is not on PATH: the Python client drives the load; it saturates its own core at a few "
                         "thousand messages/s, so these figures are a floor, not the servers' capacity.")
    elif args.client == "wrk" and not shutil.which("wrk"):
        parser.error("--client wrk: wrk is not on PATH (apt-get install wrk), or use --client python")
    if args.client == "wrk":
        notes.append(f"load from wrk (1 thread, {args.senders} connections, one sender each) with {WRK_SCRIPT.name}.")
        if args.safe:
            notes.append("safe mode runs on the Python client: wrk's Lua cannot do AES, so its safe figures are "
                         "limited by the client's core.")
    elif args.client == "python" and shutil.which("wrk"):
        notes.append("load from the Python aiohttp client (--client python): it saturates its own core, so these "
                     "figures are a floor.")
    results = asyncio.run(bench(args))
    report(results, args.senders, notes)


if __name__ == "__main__":
    main()
