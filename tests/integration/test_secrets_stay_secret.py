"""Issue 8 item 6: no password, token or HMAC secret in logs, error messages, `repr` of the models, /metrics or
dead-letter attributes. `eventbus run` (debug logs, JSON and text) serves every auth path with known secrets:
publisher tokens (env and file), a webhook bearer token, rotated timestamped HMAC secrets, NATS
user/password, Kafka SASL (against a listener that does not speak it, so the failure path logs too), and a
dispatch refused by the SSRF guard (dead-lettered). Each path is walked with right and wrong credentials;
then everything captured is searched for every secret."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.js.api import StreamConfig

from connectors.embedded_nats import pick_port
from connectors.http_auth import Authenticator, PublisherAuth, sign
from eventbus.runtime import RuntimeConfig
from schemas.loader import parse_triggers
from schemas.nats_binding import from_nats
from schemas.publishers import parse_publishers
from tests.integration.support import REPO, FunctionServer

pytestmark = pytest.mark.integration

SECRETS = {
    "SEC_PUB_ENV": "pubenv-S3CRET-7f3a91",
    "SEC_HOOK_BEARER": "hookbearer-S3CRET-2d4e55",
    "SEC_HMAC_OLD": "hmacold-S3CRET-c0de11",
    "SEC_HMAC_NEW": "hmacnew-S3CRET-beef22",
    "SEC_NATS_PW": "natspw-S3CRET-5a5a33",
    "SEC_KAFKA_PW": "kafkapw-S3CRET-9e9e44",
}
FILE_TOKEN = "pubfile-S3CRET-91bc66"
URL_PASSWORD = "urlpw-S3CRET-77ab88"
"""Inline in function URLs (aiohttp sends it as Basic auth): kept out of logs, answers and dead letters."""
ALL = [*SECRETS.values(), FILE_TOKEN]


def triggers(fn_url: str, nats_url: str, kafka: str, prefix: str) -> str:
    fn_url = fn_url.replace("http://", f"http://app:{URL_PASSWORD}@")
    doc = "apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {{name: {name}, namespace: sec}}\nspec:\n{spec}"
    specs = {
        "bearer": "  source: {http: {path: /hooks/bearer, auth: {bearerTokenFrom: {env: SEC_HOOK_BEARER}}}}\n"
                  f"  function: {{url: '{fn_url}'}}\n",
        "signed": "  source: {http: {path: /hooks/signed, auth: {hmac: {secretsFrom: [{env: SEC_HMAC_OLD}, "
                  "{env: SEC_HMAC_NEW}], timestampHeader: X-Timestamp, tolerance: 5m}}}}\n"
                  f"  function: {{url: '{fn_url}'}}\n",
        "natsauth": f"  source: {{nats: {{servers: ['{nats_url}'], subject: {prefix}.in, user: app, "
                    "passwordFrom: {env: SEC_NATS_PW}}}\n"
                    f"  function: {{url: '{fn_url}'}}\n",
        "kafkasasl": f"  source: {{kafka: {{bootstrapServers: ['{kafka}'], topics: [{prefix}-k], sasl: "
                     "{mechanism: SCRAM-SHA-512, username: app, passwordFrom: {env: SEC_KAFKA_PW}}}}\n"
                     f"  function: {{url: '{fn_url}'}}\n",
        "ssrf": "  source: {http: {path: /hooks/ssrf, auth: {bearerTokenFrom: {env: SEC_HOOK_BEARER}}}}\n"
                f"  function: {{url: 'http://app:{URL_PASSWORD}@169.254.169.254/latest/meta-data/'}}\n"
                f"  delivery: {{retry: {{attempts: 2}}, deadLetter: {{nats: {{servers: ['{nats_url}'], "
                f"subject: {prefix}.dlq}}}}}}\n",
    }
    return "---\n".join(doc.format(name=n, spec=s) for n, s in specs.items())


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)


def _cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "eventbus", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=env)
    return done.stdout + done.stderr


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_no_secret_in_any_output(fn: FunctionServer, nats_url: str, kafka_bootstrap: str, unique_name: str,
                                       tmp_path: Path, log_format: str) -> None:
    prefix = unique_name
    (tmp_path / "token").write_text(FILE_TOKEN + "\n")
    (tmp_path / "publishers.yaml").write_text(f"""publishers:
  - name: env-publisher
    tokenFrom: {{env: SEC_PUB_ENV}}
    topics: ["{prefix}.pub.>"]
  - name: file-publisher
    tokenFrom: {{file: {tmp_path / "token"}}}
    topics: ["{prefix}.file"]
""")
    (tmp_path / "t.yaml").write_text(triggers(fn.url, nats_url, kafka_bootstrap, prefix))
    env = {**os.environ, **SECRETS, "PYTHONUNBUFFERED": "1"}
    port = pick_port()
    log = tmp_path / "run.log"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=prefix, subjects=[f"{prefix}.>"]))
    outputs: list[str] = []
    proc = _spawn([sys.executable, "-m", "eventbus", "run", "-f", str(tmp_path / "t.yaml"), "--http-port", str(port),
                   "--host", "127.0.0.1", "--publishers", str(tmp_path / "publishers.yaml"), "--nats", nats_url,
                   "--log-format", log_format, "--log-level", "debug", "--rate-limit", "3", "--rate-burst", "3"],
                  log, env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    async with http.get(base + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)

            async def post(path: str, headers: dict[str, str], body: bytes = b"{}") -> int:
                async with http.post(base + path, data=body, headers=headers) as r:
                    outputs.append(f"{r.status} {dict(r.headers)} {(await r.read()).decode(errors='replace')}")
                    return r.status

            ce = {"ce-specversion": "1.0", "ce-id": "x", "ce-source": "/s", "ce-type": "t",
                  "Content-Type": "application/json"}
            pub_env, hook = SECRETS["SEC_PUB_ENV"], SECRETS["SEC_HOOK_BEARER"]
            # publishers: right, wrong (a near miss of a real one), missing, outside patterns, reserved, flood
            assert await post(f"/topics/{prefix}.pub.a", {**ce, "Authorization": f"Bearer {pub_env}"}) == 202
            assert await post(f"/topics/{prefix}.file", {**ce, "Authorization": f"Bearer {FILE_TOKEN}"}) == 202
            assert await post(f"/topics/{prefix}.pub.a", {**ce, "Authorization": f"Bearer {pub_env}x"}) == 401
            assert await post(f"/topics/{prefix}.pub.a", {**ce, "Authorization": f"Basic {pub_env}"}) == 401
            assert await post(f"/topics/{prefix}.pub.a", ce) == 401
            assert await post(f"/topics/{prefix}.file", {**ce, "Authorization": f"Bearer {pub_env}"}) == 403
            assert await post("/topics/$JS.API.STREAM.PURGE.X", {**ce, "Authorization": f"Bearer {pub_env}"}) == 403
            codes = [await post(f"/topics/{prefix}.pub.b", {**ce, "Authorization": f"Bearer {pub_env}"})
                     for _ in range(6)]
            assert 429 in codes
            # webhook bearer
            assert await post("/hooks/bearer", {**ce, "Authorization": f"Bearer {hook}"}) == 204
            assert await post("/hooks/bearer", {**ce, "Authorization": f"Bearer {hook[:-1]}"}) == 401
            # timestamped HMAC with rotation: old, new, wrong, stale, replayed
            now = int(time.time())
            for secret, ts, want in ((SECRETS["SEC_HMAC_OLD"], now, 204), (SECRETS["SEC_HMAC_NEW"], now + 1, 204),
                                     ("not-a-secret", now, 401), (SECRETS["SEC_HMAC_NEW"], now - 1000, 401),
                                     (SECRETS["SEC_HMAC_NEW"], now + 1, 409)):
                body = b'{"hook":1}'
                headers = {"Content-Type": "application/json", "X-Timestamp": str(ts),
                           "X-Hub-Signature-256": sign(secret.encode(), body, timestamp=ts)}
                assert await post("/hooks/signed", headers, body) == want, (secret, ts)
            # an SSRF-refused dispatch: dead-lettered
            assert await post("/hooks/ssrf", {**ce, "Authorization": f"Bearer {hook}"}) == 502
            async with http.get(base + "/metrics") as r:
                outputs.append(await r.text())
            # the publish CLI with right and wrong tokens, by flag and by environment (once: its output
            # does not depend on the runtime's log format)
            cli_runs = ((["--token", pub_env], {}), (["--token", pub_env + "x"], {}),
                        ([], {"EVENTBUS_TOKEN": FILE_TOKEN}), ([], {"EVENTBUS_TOKEN": "x" + FILE_TOKEN}))
            for args, extra in cli_runs if log_format == "json" else ():
                outputs.append(await asyncio.to_thread(
                    _cli, ["publish", "--http", base, "--topic", f"{prefix}.file", "--type", "t", "--source", "/s",
                           *args], {**env, **extra}))
            await asyncio.sleep(1.5)  # the NATS and Kafka triggers log their connects and failures
        info = await js.stream_info(prefix)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(prefix, seq)
            ev = from_nats(msg.headers, msg.data or b"")
            outputs.append(repr(msg.headers) + repr(ev.attributes if ev else None))
        assert any("deadletterreason" in o and "SSRF" in o for o in outputs)
    finally:
        await asyncio.to_thread(_stop, proc)
        await js.delete_stream(prefix)
        await nc.close()
    run_log = log.read_text()
    assert "HTTP ingress listening" in run_log and "dead-lettered event" in run_log  # the log is the real one
    assert "kafkasasl" in run_log  # and it covers the Kafka SASL path
    outputs.append(run_log)
    assert URL_PASSWORD not in "\n".join(outputs)
    assert "app:***@" in run_log

    # repr of the models and objects that hold or name secrets
    os_env = dict(os.environ)
    try:
        os.environ.update(SECRETS)
        spec_triggers = parse_triggers(triggers(fn.url, nats_url, kafka_bootstrap, prefix), "t.yaml")
        outputs += [repr(t) for t in spec_triggers]
        for t in spec_triggers:
            if t.spec.source.http is not None:
                outputs.append(repr(Authenticator.from_spec(t.spec.source.http.auth)))
        auth = PublisherAuth.from_file(str(tmp_path / "publishers.yaml"))
        outputs += [repr(auth), repr(auth.publishers), str(auth.publishers),
                    repr(parse_publishers((tmp_path / "publishers.yaml").read_text(), "p")),
                    repr(RuntimeConfig(publishers=auth))]
    finally:
        os.environ.clear()
        os.environ.update(os_env)

    everything = "\n".join(outputs)
    leaked = [s for s in ALL if s in everything]
    assert not leaked, f"secrets found in output: {leaked}"
