"""Security across API nodes, on a real PostgreSQL with two `stepsaga serve --no-workers`
processes: a token revoked through one is refused by both within a second; a client's
rate limit holds within 10% over both together (the engine's token buckets in the
store count it, not each node); the limits in the config file changed under load are
taken without a refused or failed request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from ..auth import bearer
from .wire import APP, Served

RULE = """
[limits]
reload = 0.2
[[limits.rule]]
name = "api"
clients = ["group:limited"]
routes = ["/graphql"]
rate = {rate}
burst = {burst}
"""
MAKE = """mutation { createToken(principal: "client", groups: ["limited", "readers"],
  label: "two nodes") { __typename ... on TokenCreated { token credential { credentialId } } } }"""
POLICIES = """mutation { setPolicies(policies: [{subject: "group:readers", actions: ["read"]}]) {
  __typename } }"""
READ = "{ allSagas { name } }"


def _post(client: httpx.Client, url: str, token: str, query: str) -> httpx.Response:
    return client.post(url, json={"query": query}, headers=bearer(token))


def test_revocation_rate_limits_and_reloads_hold_across_two_api_nodes(
        postgres_url: str, tmp_path: Path) -> None:
    config = tmp_path / "stepsaga.toml"
    config.write_text(RULE.format(rate=20, burst=20))
    servers = []
    try:
        urls = []
        for _ in range(2):  # one after the other: the first migrates the database
            node = Served("serve", "--no-workers", "--store", postgres_url, "--port", "0",
                          "--app", APP, "--config", str(config))
            servers.append(node)
            told = node.ready()
            urls.append(told["url"])
        admin = told["token"]
        with httpx.Client(timeout=30) as client:
            assert _post(client, urls[0], admin, POLICIES).json()["data"]["setPolicies"][
                "__typename"] == "PolicySet"
            made = _post(client, urls[0], admin, MAKE).json()["data"]["createToken"]
            assert made["__typename"] == "TokenCreated", made
            token, credential = made["token"], made["credential"]["credentialId"]
            _rate_limit_holds(urls, token)
            _reload_under_load(urls, token, config)
            for url in urls:
                assert _post(client, url, token, READ).status_code == 200
            revoked = _post(client, urls[0], admin, f'mutation {{ revokeToken(credentialId: '
                            f'"{credential}") {{ __typename }} }}')
            at = time.monotonic()
            assert revoked.json()["data"]["revokeToken"]["__typename"] != "NotFound", \
                revoked.text
            refused: dict[str, float] = {}
            while len(refused) < 2 and time.monotonic() - at < 5:
                for url in urls:
                    if url not in refused and \
                            _post(client, url, token, READ).status_code == 401:
                        refused[url] = time.monotonic() - at
                time.sleep(0.02)
            assert sorted(refused) == sorted(urls), refused
            assert max(refused.values()) < 1.0, refused
    finally:
        for node in servers:
            node.stop()


def _hammer(urls: list[str], token: str, seconds: float) -> tuple[list[int], float]:
    """Both nodes asked at once, as fast as they answer, for ``seconds``: the statuses
    and how long it took."""
    statuses: list[int] = []
    lock = threading.Lock()
    start = time.monotonic()

    def one(url: str) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(5000):  # bounded; the time ends it first
                if time.monotonic() - start >= seconds:
                    return
                status = _post(client, url, token, READ).status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=one, args=(url,)) for url in urls for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    return statuses, time.monotonic() - start


def _rate_limit_holds(urls: list[str], token: str) -> None:
    statuses, took = _hammer(urls, token, 4.0)
    taken = statuses.count(200)
    expected = 20 + 20 * took  # the burst, then the rate
    assert set(statuses) <= {200, 429}, set(statuses)
    assert statuses.count(429) > taken, "the clients did not ask faster than the limit"
    assert abs(taken - expected) <= 0.1 * expected, (taken, expected, took)


def _reload_under_load(urls: list[str], token: str, config: Path) -> None:
    config.write_text(RULE.format(rate=100000, burst=100000))
    time.sleep(1.0)  # both nodes have it
    stop = threading.Event()

    def rewrite() -> None:
        for i in range(20):
            if stop.is_set():
                return
            config.write_text(RULE.format(rate=100000 + i, burst=100000))
            time.sleep(0.1)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        statuses, _ = _hammer(urls, token, 2.5)
    finally:
        stop.set()
        writer.join()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
